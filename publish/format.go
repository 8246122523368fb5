package publish

import (
	"strings"

	"github.com/unsgate/unsgate/model"
)

// Encoder is a wire format for point values other than UNS JSON. The
// Fanout encodes each point once per Encoder in use and hands the same bytes
// to every sink that asked for that Encoder.
type Encoder interface {
	// AppendPoint appends the encoding of p (whose Meta is set) to dst and
	// returns the extended slice. It is called under the Fanout's lock and
	// must be fast and must not keep p.
	AppendPoint(dst []byte, p *model.Point) []byte
}

// EncodingSink is a Sink whose queue holds messages in its own format:
// Payload is what Encoder().AppendPoint produced, Retain is false. The
// Encoder must be comparable and the same value for the sink's lifetime.
type EncodingSink interface {
	Sink
	Encoder() Encoder
}

// Observer is a Sink that keeps state about what is current, not only about
// what it has sent (a Sparkplug edge node births with the newest values,
// even those still queued). Queued is called with every batch before the
// batch enters the sink's queue, under the Fanout's lock: it must be quick
// and must not keep msgs (payloads may be kept; they are never modified).
// Observers also receive source events (see SourceEvent), in order with the
// points.
type Observer interface {
	Sink
	Queued(msgs []Message)
}

// eventPrefix starts the topic of source event messages. No UNS topic can
// start with it: '$' is not a valid level character.
const eventPrefix = "$unsgate/source/"

// Source event payloads.
const (
	eventUp   = "up"
	eventDown = "down"
)

// SourceEvent reports whether m is a source event (see Fanout.SourceState)
// and if so which source went up or down.
func SourceEvent(m *Message) (source string, up, ok bool) {
	name, ok := strings.CutPrefix(m.Topic, eventPrefix)
	if !ok {
		return "", false, false
	}
	return name, string(m.Payload) == eventUp, true
}

func isEventTopic(topic string) bool { return strings.HasPrefix(topic, eventPrefix) }
