#!/usr/bin/env bash
# Builds promtool from the pinned Prometheus module in go.mod/go.sum, cached; prints its path.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../go-tool.sh" promtool github.com/prometheus/prometheus/cmd/promtool
