package publish

import (
	"testing"
	"time"
)

func TestProblemsRateLimitPerKind(t *testing.T) {
	var p Problems
	if msg, at := p.Last(); msg != "" || !at.IsZero() {
		t.Fatalf("zero value: %q %v", msg, at)
	}
	if !p.Note("dial", "refused") || p.Note("dial", "refused again") || !p.Note("puback", "not authorized") {
		t.Fatal("want the first of each kind logged, the repeat not")
	}
	if msg, at := p.Last(); msg != "not authorized" || time.Since(at) > time.Second {
		t.Fatalf("last = %q at %v", msg, at)
	}
	p.logged["dial"] = time.Now().Add(-ProblemLogEvery)
	if !p.Note("dial", "refused") {
		t.Fatal("not logged again after ProblemLogEvery")
	}
}
