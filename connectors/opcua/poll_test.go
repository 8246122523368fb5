package opcua

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// Poll mode reads in requests of at most MaxNodesPerRead nodes: the
// server's limit (the sim publishes 32), or a configured one, lowered to
// the server's.
func TestPollBatches(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	var tags []Tag
	var keys []string
	for i := range 50 {
		k := srv.AddVariable(fmt.Sprintf("%s/V%d", dir, i), int32(i))
		keys, tags = append(keys, k), append(tags, tag(t, k))
	}
	for _, tc := range []struct {
		configured int
		want       []int // node counts of one poll cycle's reads
	}{
		{0, []int{32, 18}},
		{7, []int{7, 7, 7, 7, 7, 7, 7, 1}},
		{100, []int{32, 18}},
	} {
		t.Run(fmt.Sprint(tc.configured), func(t *testing.T) {
			tap := startTap(t, srv.Endpoint())
			cfg := testConfig(tap.endpoint(), tags...)
			cfg.Mode, cfg.MaxNodesPerRead = ModePoll, tc.configured
			rec := newRecorder()
			r := run(t, mustNew(t, cfg), rec.emit)
			for i, k := range keys {
				rec.waitValue(t, k, model.QualityGood, model.IntValue(int64(i)))
			}
			srv.Set(dir+"/V7", int32(700))
			rec.waitValue(t, keys[7], model.QualityGood, model.IntValue(700))
			n := len(tc.want)
			sizes := func() []int {
				var sizes []int
				for _, req := range messagesOf[*ua.ReadRequest](tap) {
					if req.NodesToRead[0].NodeID.Namespace() != 0 {
						sizes = append(sizes, len(req.NodesToRead))
						if req.TimestampsToReturn != ua.TimestampsToReturnBoth || req.MaxAge != 0 {
							t.Fatalf("read request %+v: want both timestamps and max age 0", req)
						}
					}
				}
				return sizes
			}
			waitFor(t, "two poll cycles", 5*time.Second, func() bool { return len(sizes()) >= 2*n })
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			srv.Set(dir+"/V7", int32(7))
			got := sizes()
			got = got[:len(got)-len(got)%n] // the last cycle may have been cut short
			for c := 0; c < len(got); c += n {
				if !slices.Equal(got[c:c+n], tc.want) {
					t.Fatalf("reads of %v nodes, want cycles of %v", got, tc.want)
				}
			}
			rec.mu.Lock()
			for _, s := range rec.sizes {
				if !slices.Contains(tc.want, s) {
					t.Errorf("an emitted batch of %d samples; want one batch per read %v", s, tc.want)
				}
			}
			rec.mu.Unlock()
		})
	}
}

// Tags are grouped by poll interval: a request never mixes groups, and the
// fast group is read more often.
func TestPollGroups(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	fast := srv.AddVariable(dir+"/Fast", 1.0)
	slow := srv.AddVariable(dir+"/Slow", 2.0)
	tf, ts := tag(t, fast), tag(t, slow)
	tf.Poll, ts.Poll = 20*time.Millisecond, 300*time.Millisecond
	cfg := testConfig(srv.Endpoint(), tf, ts)
	cfg.Mode = ModePoll
	var mixed bool
	rec := newRecorder()
	emit := func(b []model.Sample) {
		if len(b) != 1 {
			mixed = true
		}
		rec.emit(b)
	}
	src := mustNew(t, cfg)
	r := run(t, src, emit)
	rec.wait(t, "three reads of the slow tag", 5*time.Second, func() bool { return len(rec.all[slow]) >= 3 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	nf, ns := len(rec.history(fast)), len(rec.history(slow))
	if mixed {
		t.Fatal("a batch mixed the two poll groups")
	}
	// Ideally 15 times as often; allow for a busy machine.
	if nf < 3*ns {
		t.Fatalf("fast tag read %d times, slow %d: want the fast one read far more often", nf, ns)
	}
	// Every read that emitted was metered, answered and timed (keep-alive
	// reads of the server state come on top).
	if m := src.Meter().Stats(); m.Requests < uint64(nf+ns) || m.Failed != 0 || m.LastLatency <= 0 || m.LatencySum < m.LastLatency {
		t.Fatalf("meter %+v after %d reads", m, nf+ns)
	}
}
