package publish

import (
	"sync"
	"time"
)

// ProblemLogEvery is how often a sink logs problems of one kind: a broker
// that stays away must not flood the log.
const ProblemLogEvery = 10 * time.Second

// Problems keeps a sink's last connection or delivery problem (for its
// SinkStatus) and limits how often each kind of problem is logged. It is
// safe for concurrent use; the zero value is ready.
type Problems struct {
	mu     sync.Mutex
	last   string
	at     time.Time
	logged map[string]time.Time // kind -> when it was last logged
}

// Note records msg as the last problem and reports whether the caller
// should log it: at most once per ProblemLogEvery for each kind.
func (p *Problems) Note(kind, msg string) (log bool) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.at = msg, now
	if now.Sub(p.logged[kind]) < ProblemLogEvery {
		return false
	}
	if p.logged == nil {
		p.logged = map[string]time.Time{}
	}
	p.logged[kind] = now
	return true
}

// Last returns the last problem and when it was noted ("" and the zero
// time when there was none).
func (p *Problems) Last() (string, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.at
}
