package kafka

// Interop test against kcat (librdkafka), an independent Kafka client: it
// reads the sink's records from kfake and must see the same keys, values
// and headers. It runs when UNSGATE_INTEROP=1 (CI sets it after
// .ci/interop-kafka.sh installed kcat); then a missing kcat is a failure,
// not a skip.

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/unsgate/unsgate/publish"
)

func TestInteropKcatReadsRecords(t *testing.T) {
	if os.Getenv("UNSGATE_INTEROP") != "1" {
		t.Skip("interop test against kcat: set UNSGATE_INTEROP=1 (after .ci/interop-kafka.sh installed kcat)")
	}
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed (UNSGATE_INTEROP=1 needs it; run .ci/interop-kafka.sh): %v", err)
	}
	for _, compression := range Compressions {
		t.Run(compression, func(t *testing.T) {
			c := startCluster(t, kfake.SeedTopics(3, DefaultTopic))
			cfg := testConfig(addrs(c)...)
			cfg.Compression = compression
			cfg.ModelVersion = func() string { return "3f9c2a1b" }
			s := newSink(t, cfg)
			q := publish.NewQueue(100)
			msgs := values(tags("acme/munich/bottling/line1", 4), 0, 12)
			msgs[5].Replay = true
			q.PushBatch(msgs)
			runSink(t, s, q)
			waitFor(t, "values sent", 10*time.Second, func() bool { return s.Status().Sent == 12 })

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// -e: exit at the end of the partitions; one line per record.
			cmd := exec.CommandContext(ctx, kcat, "-C", "-b", addrs(c)[0], "-t", DefaultTopic, "-f", "%k %s %h\n", "-e", "-q")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("kcat: %v\n%s", err, out)
			}
			var recs []record
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				// key, then the JSON value (no spaces), then the headers
				// as k=v,k=v.
				key, rest, _ := strings.Cut(line, " ")
				value, hdrs, _ := strings.Cut(rest, " ")
				r := record{key: key, value: value, headers: map[string]string{}}
				for _, kv := range strings.Split(hdrs, ",") {
					k, v, _ := strings.Cut(kv, "=")
					r.headers[k] = v
				}
				recs = append(recs, r)
			}
			if len(recs) != 12 {
				t.Fatalf("kcat read %d records, want 12:\n%s", len(recs), out)
			}
			checkOrder(t, msgs, recs)
			for _, m := range msgs {
				for _, r := range recs {
					if r.value != string(m.Payload) {
						continue
					}
					want := "content-type=application/json quality=GOOD timestamp_ms=" + strconv.FormatInt(m.TimeMs, 10) +
						" gateway=gw1 model_version=3f9c2a1b"
					if m.Replay {
						want += " replay=true"
					}
					got := "content-type=" + r.headers["content-type"] + " quality=" + r.headers["quality"] +
						" timestamp_ms=" + r.headers["timestamp_ms"] + " gateway=" + r.headers["gateway"] +
						" model_version=" + r.headers["model_version"]
					if v, ok := r.headers["replay"]; ok {
						got += " replay=" + v
					}
					if got != want || len(r.headers) != 5+boolInt(m.Replay) {
						t.Errorf("%s: kcat saw headers %v, want %s", m.Topic, r.headers, want)
					}
				}
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
