// Package models holds the example model files (a bottling line) that the
// demo runs and CI validates. They are embedded so `unsgate demo` works from
// any directory; the files here are the source of truth.
package models

import "embed"

// FS holds every *.yaml model file of this folder.
//
//go:embed *.yaml
var FS embed.FS
