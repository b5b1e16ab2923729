package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/sinks/stdout"
)

// buildSinks creates the configured sinks, explicitly: no registry.
func buildSinks(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger) ([]bridge.Sink, error) {
	var sinks []bridge.Sink
	for _, name := range cfg.Sinks {
		switch name {
		case stdout.Name:
			sinks = append(sinks, stdout.New(out))
		default:
			return nil, fmt.Errorf("sink %q is not available in this build", name)
		}
	}
	return sinks, nil
}
