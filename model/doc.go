// Package model defines the model file schema (loading, validation with
// file:line:col positions) and the value types shared by every other package:
// Value, Quality, Sample, Point and TagMeta.
//
// model sits at the bottom of the import graph: it must not import any other
// unsgate package, and it must not do I/O beyond reading model files.
package model
