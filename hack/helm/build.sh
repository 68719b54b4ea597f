#!/usr/bin/env bash
# Builds helm (Helm's CLI) from the pinned helm.sh/helm/v4 module in go.mod/go.sum, cached; prints its path.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../go-tool.sh" helm helm.sh/helm/v4/cmd/helm
