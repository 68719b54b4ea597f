//go:build tools

// Pins the helm command: build.sh builds helm.sh/helm/v4/cmd/helm from this module's go.mod/go.sum.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
