{{- define "demo.image" -}}
{{- $registry := .global.imageRegistry | default .image.registry -}}
{{- printf "%s/%s:%s" $registry .image.repository (toString .image.tag) -}}
{{- end -}}
