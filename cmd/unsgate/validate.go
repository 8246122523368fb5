package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/unsgate/unsgate/gateway"
	"github.com/unsgate/unsgate/model"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quiet := fs.Bool("q", false, "print nothing when everything is valid")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: unsgate validate [-q] PATH...\n\nChecks model files, folders of model files and gateway configs without connecting anywhere.\nExit status 0 when valid, 1 with every problem as file:line:col: message.")
		fs.PrintDefaults()
	}
	paths, err := parseFlags(fs, args)
	if err != nil {
		return 2
	}
	if len(paths) == 0 {
		fs.Usage()
		return 2
	}
	rep, err := gateway.Validate(paths...)
	if err != nil {
		printErr(stderr, err)
		var ds model.Diagnostics
		if errors.As(err, &ds) {
			fmt.Fprintf(stderr, "%d problem(s)\n", len(ds))
		}
		return 1
	}
	if !*quiet {
		fmt.Fprintln(stdout, rep)
	}
	return 0
}
