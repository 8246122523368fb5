package gateway

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The load tool keeps working: a short run moves data end to end and
// reports it.
func TestBenchSmoke(t *testing.T) {
	res, err := RunBench(context.Background(), BenchOptions{Tags: 200, Poll: 100 * time.Millisecond,
		Duration: time.Second, Warmup: 500 * time.Millisecond, Subscribe: true})
	if err != nil {
		t.Fatal(err)
	}
	// 200 tags changing every 100 ms: about 2000 updates in a second. A
	// loaded CI box may manage far fewer polls; one whole poll through
	// every stage shows the tool works (its figures are for docs, not
	// for tests).
	if res.Samples < 200 || res.Points < 200 || res.Sent < 200 || res.Delivered < 200 {
		t.Errorf("too little moved: %+v", res)
	}
	if res.Dropped != 0 {
		t.Errorf("dropped %d at a rate far below capacity", res.Dropped)
	}
	var out strings.Builder
	res.Print(&out)
	if !strings.Contains(out.String(), "latency p50") {
		t.Errorf("report:\n%s", out.String())
	}
}
