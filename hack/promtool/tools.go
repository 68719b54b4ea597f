//go:build tools

// Pins promtool: build.sh builds github.com/prometheus/prometheus/cmd/promtool from this module's go.mod/go.sum.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
