{{/* The chart's name, for labels. */}}
{{- define "kai.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "kai.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<component>: the name of each component's Deployment, ServiceAccount and roles.
     Takes (dict "root" $ "component" "scheduler"). Release names are at most 53 characters. */}}
{{- define "kai.componentName" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select one component's pods. Takes (dict "root" $ "component" "..."). */}}
{{- define "kai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kai.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of a component's objects. Takes (dict "root" $ "component" "..."). */}}
{{- define "kai.labels" -}}
{{ include "kai.selectorLabels" . }}
app.kubernetes.io/part-of: kai
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "kai.chart" .root }}
{{- end -}}

{{- define "kai.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* host:port for a --*-bind-address flag from (list host port); an IPv6 host goes in brackets. */}}
{{- define "kai.listen" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host }}[{{ $host }}]:{{ index . 1 }}{{ else }}{{ $host }}:{{ index . 1 }}{{ end -}}
{{- end -}}

{{/* A probe of the health server: over HTTP from the kubelet, or, when the server listens on a
     loopback address only (the kubelet cannot reach it), from inside the container. */}}
{{- define "kai.probe" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
{{- $host := $root.Values.bindAddress.health -}}
{{- if or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") }}
exec:
  command:
    - python
    - -c
    - import urllib.request; urllib.request.urlopen("http://{{ include "kai.listen" (list $host $root.Values.ports.health) }}{{ $path }}", timeout=5)
timeoutSeconds: 5
{{- else }}
httpGet:
  path: {{ $path }}
  port: health
{{- end }}
{{- end -}}

{{/* The flags both components take, before their own and the user's additionalArgs. */}}
{{- define "kai.commonArgs" -}}
- --in-cluster
- --log-format={{ .root.Values.logFormat }}
{{- if .root.Values.metricsEnabled }}
- --metrics-bind-address={{ include "kai.listen" (list .root.Values.bindAddress.metrics .root.Values.ports.metrics) }}
{{- end }}
- --health-probe-bind-address={{ include "kai.listen" (list .root.Values.bindAddress.health .root.Values.ports.health) }}
{{- if .values.leaderElection }}
- --leader-elect
- --leader-elect-resource-name={{ include "kai.componentName" . }}
{{- end }}
{{- end -}}

{{/* A component's Deployment. Takes (dict "root" $ "component" "scheduler" "values" .Values.scheduler
     "args" (list ...)): args are the component's own flags, then values.additionalArgs follow. */}}
{{- define "kai.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := include "kai.componentName" . -}}
{{- if and (gt (int $v.replicas) 1) (not $v.leaderElection) -}}
{{- fail (printf "%s.replicas is %d but %s.leaderElection is false: more than one active %s would act on the same pods; turn leader election on or set replicas to 1" .component (int $v.replicas) .component .component) -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kai.labels" . | nindent 4 }}
spec:
  replicas: {{ $v.replicas }}
  {{- if not $v.leaderElection }}
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "kai.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "kai.labels" . | nindent 8 }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "kai.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["kai-cli"]
          args:
            - run
            - {{ .component }}
            {{- include "kai.commonArgs" . | nindent 12 }}
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
            {{- range $v.additionalArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
          ports:
            {{- if $root.Values.metricsEnabled }}
            - name: metrics
              containerPort: {{ $root.Values.ports.metrics }}
              protocol: TCP
            {{- end }}
            - name: health
              containerPort: {{ $root.Values.ports.health }}
              protocol: TCP
          livenessProbe:
            {{- include "kai.probe" (list $root "/healthz") | nindent 12 }}
            initialDelaySeconds: 15
            periodSeconds: 20
            failureThreshold: 3
          readinessProbe:
            {{- include "kai.probe" (list $root "/readyz") | nindent 12 }}
            periodSeconds: 10
            failureThreshold: 3
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* A component's ServiceAccount. Takes (dict "root" $ "component" "..."). */}}
{{- define "kai.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "kai.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "kai.labels" . | nindent 4 }}
automountServiceAccountToken: true
{{- end -}}

{{/* The Role for a component's leader-election Lease, in the release namespace, and its binding.
     The Lease (named like the component: --leader-elect-resource-name) is created once (a create
     cannot be limited to a name), then read and renewed: get and update of that Lease only. */}}
{{- define "kai.leaseRole" -}}
{{- $name := include "kai.componentName" . -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}-leader-election
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "kai.labels" . | nindent 4 }}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["create"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    resourceNames: [{{ $name | quote }}]
    verbs: ["get", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}-leader-election
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "kai.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}-leader-election
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}

{{/* The ClusterRoleBinding of a component's ClusterRole to its ServiceAccount. */}}
{{- define "kai.clusterRoleBinding" -}}
{{- $name := include "kai.componentName" . -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "kai.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}
