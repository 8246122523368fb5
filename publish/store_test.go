package publish

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

func openStore(t testing.TB, dir string, opts StoreOptions) *Store {
	t.Helper()
	s, err := OpenStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// numbered is message i of a flow: topic and payload say i.
func numbered(i int) Message {
	return Message{
		Topic:   fmt.Sprintf("acme/site/area/line/cell/tag%d", i%5),
		Payload: []byte(fmt.Sprintf(`{"timestamp_ms":%d,"value":%d,"quality":"GOOD"}`, 1717083000000+i, i)),
		Retain:  true,
		Quality: model.QualityGood,
		TimeMs:  int64(1717083000000 + i),
	}
}

func appendN(t testing.TB, s *Store, from, n int) {
	t.Helper()
	ms := make([]Message, 0, n)
	for i := range n {
		ms = append(ms, numbered(from+i))
	}
	if _, err := s.Append(ms); err != nil {
		t.Fatal(err)
	}
}

// readAll reads every unacknowledged message.
func readAll(t testing.TB, s *Store) []Message {
	t.Helper()
	var out []Message
	from := uint64(0)
	for {
		got, err := s.ReadFrom(from, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return out
		}
		out = append(out, got...)
		from = got[len(got)-1].Seq + 1
	}
}

// checkRun checks that ms are the numbered messages from..from+len-1
// with consecutive sequence numbers.
func checkRun(t testing.TB, ms []Message, from int) {
	t.Helper()
	for k, m := range ms {
		want := numbered(from + k)
		if m.Topic != want.Topic || !bytes.Equal(m.Payload, want.Payload) || m.TimeMs != want.TimeMs || m.Quality != want.Quality || !m.Retain {
			t.Fatalf("message %d: %+v, want %+v", k, m, want)
		}
		if k > 0 && m.Seq != ms[k-1].Seq+1 {
			t.Fatalf("message %d: seq %d after %d", k, m.Seq, ms[k-1].Seq)
		}
	}
}

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, StoreOptions{})
	in := []Message{
		{Topic: "a/b", Payload: []byte(`{"value":1}`), Retain: true, Quality: model.QualityGood, TimeMs: 1},
		{Topic: "a/c", Payload: nil, Quality: model.QualityBad, TimeMs: -5, Replay: true},
		{Topic: "ü/ß", Payload: bytes.Repeat([]byte{0, 255}, 1000), Quality: model.QualityUncertain, TimeMs: 1 << 50},
	}
	if _, err := s.Append(in); err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if in[i].Seq != uint64(i+1) {
			t.Fatalf("seq %d = %d", i, in[i].Seq)
		}
	}
	got := readAll(t, s)
	if len(got) != len(in) {
		t.Fatalf("read %d, want %d", len(got), len(in))
	}
	for i := range in {
		g, w := got[i], in[i]
		if g.Topic != w.Topic || !bytes.Equal(g.Payload, w.Payload) || g.Retain != w.Retain || g.Replay != w.Replay ||
			g.Quality != w.Quality || g.TimeMs != w.TimeMs || g.Seq != w.Seq || g.Meta != nil {
			t.Errorf("message %d: %+v, want %+v", i, g, w)
		}
	}
	// Reading from the middle, and past the end.
	if got, _ := s.ReadFrom(2, nil, 1); len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("ReadFrom(2) = %+v", got)
	}
	if got, _ := s.ReadFrom(4, nil, 10); len(got) != 0 {
		t.Fatalf("ReadFrom past the end = %+v", got)
	}
	s.Ack(3)
	if got := readAll(t, s); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("after Ack(3): %+v", got)
	}
	if st := s.Stats(); st.Pending() != 1 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Closed and opened again: what was not acknowledged is there, in order,
// across several segments; acknowledged segments are gone from disk.
func TestStoreReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, StoreOptions{SegmentBytes: 8 << 10})
	appendN(t, s, 0, 1000)
	s.Ack(301) // messages 0..299 (seq 1..300) done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]Message{numbered(0)}); err != ErrStoreClosed {
		t.Fatalf("Append after Close = %v", err)
	}
	s = openStore(t, dir, StoreOptions{SegmentBytes: 8 << 10})
	got := readAll(t, s)
	if len(got) != 700 || got[0].Seq != 301 {
		t.Fatalf("after reopen: %d messages from seq %d", len(got), got[0].Seq)
	}
	checkRun(t, got, 300)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	st := s.Stats()
	if st.Bytes > 8<<10*int64(len(segs)) || len(segs) > 12 {
		t.Fatalf("%d segments, %d bytes for 700 messages", len(segs), st.Bytes)
	}
	// Appends go on after the last sequence number.
	appendN(t, s, 1000, 10)
	got = readAll(t, s)
	if len(got) != 710 || got[709].Seq != 1010 {
		t.Fatalf("after appending: %d messages, last seq %d", len(got), got[len(got)-1].Seq)
	}
	checkRun(t, got, 300)
	s.Ack(1011)
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 1 {
		t.Fatalf("%d segments left after acknowledging everything", len(segs))
	}
}

// A process that dies without Close (its files simply stay as they are):
// a second Open sees everything appended; acknowledgements after the last
// sync come again (at-least-once), nothing is lost.
func TestStoreWithoutClose(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, StoreOptions{SyncEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendN(t, s, 0, 100)
	s.Ack(11)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 100, 50)
	s.Ack(51) // not synced

	s2 := openStore(t, dir, StoreOptions{})
	got := readAll(t, s2)
	if len(got) != 140 || got[0].Seq != 11 {
		t.Fatalf("second open: %d messages from seq %d, want 140 from 11", len(got), got[0].Seq)
	}
	checkRun(t, got, 10)
}

// A write cut short by a crash leaves a torn record at the end: Open cuts
// it off, and appends go on after the last whole record.
func TestStoreTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, StoreOptions{})
	appendN(t, s, 0, 20)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := segs[len(segs)-1]
	whole, _ := os.ReadFile(last)
	rec := appendRecord(nil, &Message{Seq: 21, Topic: "x", Payload: []byte("torn")})
	if err := os.WriteFile(last, append(whole, rec[:len(rec)-3]...), 0o644); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, StoreOptions{})
	if st := s.Stats(); st.Next != 21 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want next 21 and nothing dropped", st)
	}
	if fi, _ := os.Stat(last); fi.Size() != int64(len(whole)) {
		t.Fatalf("segment %d bytes, want the torn record cut (%d)", fi.Size(), len(whole))
	}
	appendN(t, s, 20, 5)
	got := readAll(t, s)
	if len(got) != 25 {
		t.Fatalf("%d messages", len(got))
	}
	checkRun(t, got, 0)
}

// Damage inside a segment that is not the last: the records from the
// damage to the segment's end are lost and counted exactly; the rest reads.
func TestStoreDamageCounted(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, StoreOptions{SegmentBytes: 4 << 10})
	appendN(t, s, 0, 300)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	// Flip a byte in the middle of the second segment.
	data, _ := os.ReadFile(segs[1])
	data[len(data)/2] ^= 0xff
	os.WriteFile(segs[1], data, 0o644)
	first2, _ := strconv.ParseUint(strings.TrimSuffix(filepath.Base(segs[1]), ".seg"), 10, 64)
	first3, _ := strconv.ParseUint(strings.TrimSuffix(filepath.Base(segs[2]), ".seg"), 10, 64)

	s = openStore(t, dir, StoreOptions{SegmentBytes: 4 << 10})
	st := s.Stats()
	got := readAll(t, s)
	if uint64(len(got))+st.Dropped != 300 || st.Damaged != st.Dropped || st.Dropped == 0 || st.Dropped >= first3-first2 {
		t.Fatalf("%d read + %d dropped (stats %+v), want 300 in all, some of segment 2's %d lost", len(got), st.Dropped, st, first3-first2)
	}
	// What is read is whole: every message matches its number.
	for _, m := range got {
		checkRun(t, []Message{m}, int(m.Seq)-1)
	}
}

// Over the byte budget the oldest unacknowledged messages go first, and
// the count of those dropped is exact.
func TestStoreBudgetDropsOldest(t *testing.T) {
	dir := t.TempDir()
	opts := StoreOptions{MaxBytes: 64 << 10, SegmentBytes: 8 << 10}
	s := openStore(t, dir, opts)
	total := 0
	for range 100 {
		appendN(t, s, total, 50)
		total += 50
	}
	st := s.Stats()
	if st.Bytes > opts.MaxBytes {
		t.Fatalf("%d bytes on disk, budget %d", st.Bytes, opts.MaxBytes)
	}
	got := readAll(t, s)
	if uint64(len(got))+st.Dropped != uint64(total) || st.Damaged != 0 {
		t.Fatalf("%d kept + %d dropped, want %d", len(got), st.Dropped, total)
	}
	// The newest are kept, in order, without a gap.
	checkRun(t, got, total-len(got))
	if got[len(got)-1].Seq != uint64(total) {
		t.Fatalf("last kept seq %d, want %d", got[len(got)-1].Seq, total)
	}
	// Acknowledged messages are not counted as dropped when their
	// segment goes.
	s.Ack(st.Next)
	before := s.Stats().Dropped
	appendN(t, s, total, 2000)
	if d := s.Stats().Dropped - before; d != 2000-uint64(len(readAll(t, s))) {
		t.Fatalf("dropped %d more", d)
	}
}

// The byte budget survives a reopen: the store counts what is on disk.
func TestStoreBudgetAfterReopen(t *testing.T) {
	dir := t.TempDir()
	opts := StoreOptions{MaxBytes: 32 << 10, SegmentBytes: 4 << 10}
	s := openStore(t, dir, opts)
	appendN(t, s, 0, 200)
	s.Close()
	s = openStore(t, dir, opts)
	appendN(t, s, 200, 1000)
	if st := s.Stats(); st.Bytes > opts.MaxBytes || uint64(len(readAll(t, s)))+st.Dropped != 1200 {
		t.Fatalf("stats %+v", st)
	}
}

// The real thing: a process appending numbered messages is killed with
// SIGKILL; everything it reported as appended is there, in order, intact.
func TestStoreSurvivesSIGKILL(t *testing.T) {
	if dir := os.Getenv("UNSGATE_STORE_CHILD"); dir != "" {
		storeChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreSurvivesSIGKILL$")
	cmd.Env = append(os.Environ(), "UNSGATE_STORE_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	appended := 0
	for sc.Scan() && appended < 20000 {
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			appended = n
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	for sc.Scan() { // what it printed before dying
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			appended = n
		}
	}
	cmd.Wait()
	if appended < 20000 {
		t.Fatalf("child appended only %d", appended)
	}

	s := openStore(t, dir, StoreOptions{SegmentBytes: 64 << 10})
	got := readAll(t, s)
	if len(got) < appended {
		t.Fatalf("%d messages after SIGKILL, the child had appended %d", len(got), appended)
	}
	checkRun(t, got, 0)
	t.Logf("child appended %d (reported), %d found", appended, len(got))
}

// storeChild appends batches of numbered messages for ever, printing the
// count after each Append returned.
func storeChild(dir string) {
	s, err := OpenStore(dir, StoreOptions{SegmentBytes: 64 << 10})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for n := 0; ; {
		ms := make([]Message, 0, 37)
		for i := range 37 {
			ms = append(ms, numbered(n+i))
		}
		if _, err := s.Append(ms); err != nil {
			fmt.Println("append:", err)
			os.Exit(1)
		}
		n += len(ms)
		fmt.Fprintln(w, n)
		w.Flush()
	}
}

// Whatever a segment holds, Open and reading never panic, and what they
// return passed the checksum.
func FuzzStoreOpen(f *testing.F) {
	var seed []byte
	for i := range 3 {
		m := numbered(i)
		m.Seq = uint64(i + 1)
		seed = appendRecord(seed, &m)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-5])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "00000000000000000001.seg"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := OpenStore(dir, StoreOptions{SyncEvery: -1})
		if err != nil {
			return
		}
		defer s.Close()
		got := readAll(t, s)
		if st := s.Stats(); uint64(len(got)) != st.Pending() {
			t.Fatalf("read %d, pending %d", len(got), st.Pending())
		}
		// The store stays usable.
		if _, err := s.Append([]Message{numbered(0)}); err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkStoreAppend(b *testing.B) {
	s := openStore(b, b.TempDir(), StoreOptions{})
	batch := make([]Message, 100)
	for i := range batch {
		batch[i] = numbered(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
		s.Ack(s.Stats().Next) // keep the disk use flat
	}
	st := s.Stats()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/msg")
	b.ReportMetric(float64(len(appendRecord(nil, &batch[0]))), "bytes/msg")
	_ = st
}

func BenchmarkStoreDrain(b *testing.B) {
	s := openStore(b, b.TempDir(), StoreOptions{})
	const n = 100000
	batch := make([]Message, 0, 1000)
	for i := 0; i < n; i += 1000 {
		batch = batch[:0]
		for k := range 1000 {
			batch = append(batch, numbered(i+k))
		}
		if _, err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]Message, 0, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for from := uint64(1); from <= n; {
			got, err := s.ReadFrom(from, buf[:0], 1000)
			if err != nil || len(got) == 0 {
				b.Fatal(err, len(got))
			}
			from = got[len(got)-1].Seq + 1
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}
