// Package connectors defines how raw readings enter the gateway: the Source
// interface that each protocol implements for one session, and the
// Supervisor that owns reconnects with capped exponential backoff and jitter.
//
// connectors must not import harmonize or publish; the gateway wires them.
package connectors

import (
	"context"
	"errors"

	"github.com/unsgate/unsgate/model"
)

// Emit hands a batch of samples to the engine. The slice and its samples are
// only valid during the call: the source reuses them for the next batch.
// Emit never blocks for long (it only enqueues).
type Emit func([]model.Sample)

// Source reads raw values from one device or server.
//
// Run handles exactly one session: connect, read until ctx is done or the
// session breaks, then return. It returns nil when ctx was cancelled and an
// error otherwise. It never retries by itself; the Supervisor does, after
// marking every address BAD. An error wrapping ErrConfig is a configuration
// problem that retrying cannot fix: the Supervisor stops.
type Source interface {
	// Name is the gateway's id for the source (from the config).
	Name() string
	// Addresses lists every binding key the source emits samples for.
	Addresses() []string
	Run(ctx context.Context, emit Emit) error
}

// ErrConfig marks errors that retrying cannot fix (bad address, bad URL).
var ErrConfig = errors.New("configuration error")
