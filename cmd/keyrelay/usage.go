package main

import (
	"io"

	"github.com/kelseyhightower/envconfig"
)

func printUsage(w io.Writer, format string) error {
	return envconfig.Usagef(envPrefix, &Config{}, w, format)
}
