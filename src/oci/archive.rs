//! Image sources on disk for `pack`: `docker save` archives and OCI image layouts (dir or tar). (bundle work)
