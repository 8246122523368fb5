package broker

import (
	"context"
	"log/slog"
)

// clientEndHandler passes the broker's log records on, with one change:
// the broker's listener logs every client connection that ends with an
// error (the client went away without DISCONNECT: EOF, reset, closed) as a
// warning with an empty message. A subscriber killed with Ctrl-C is no
// reason for a warning on the edge box, so those records become debug
// records that say what they are.
type clientEndHandler struct{ next slog.Handler }

const clientEndMsg = "client connection ended"

func (h clientEndHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h clientEndHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" && r.Level == slog.LevelWarn {
		if !h.next.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		nr := slog.NewRecord(r.Time, slog.LevelDebug, clientEndMsg, r.PC)
		r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
		r = nr
	}
	return h.next.Handle(ctx, r)
}

func (h clientEndHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return clientEndHandler{h.next.WithAttrs(as)}
}

func (h clientEndHandler) WithGroup(name string) slog.Handler {
	return clientEndHandler{h.next.WithGroup(name)}
}
