package publish

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/unsgate/unsgate/model"
)

// Store is a sink's durable message log: an append-only sequence of
// segment files in one directory, with an acknowledgement cursor. Every
// message appended gets the next sequence number (Message.Seq); the log
// keeps every message at or above the cursor until it is acknowledged or
// the byte budget forces the oldest out (dropped, and counted exactly).
//
// Durability: Append writes each batch to the operating system before it
// returns, so a killed process (kill -9, a crash) loses nothing it
// appended. Against a power cut, the segment and the cursor are flushed
// to the device (fsync) every SyncEvery, so at most that much of the
// newest data is lost; with SyncEvery < 0 every Append is flushed before
// it returns. After a crash the cursor may be up to SyncEvery behind: the
// messages acknowledged in that window are read again (at-least-once).
//
// On disk, in the directory:
//
//	00000000000000000001.seg  segments, named by their first sequence number
//	cursor                    the first unacknowledged sequence number
//
// A segment is a run of records, each
//
//	uint32 body length | uint32 CRC-32C of the body | body
//	body: uint64 seq | int64 time ms | uint8 flags | uint8 quality |
//	      uvarint topic length | topic | payload
//
// all little-endian. Open truncates a torn record at the end of the last
// segment (a write cut short by a crash) and counts records lost to
// damage elsewhere as dropped.
//
// A Store is safe for concurrent use.
type Store struct {
	dir  string
	opts StoreOptions

	mu       sync.Mutex
	segs     []*segment // oldest first; the last one is written to
	active   *os.File   // the last segment, for appending
	next     uint64     // sequence number of the next append
	acked    uint64     // every seq below is acknowledged
	ackDisk  uint64     // acked as last written to the cursor file
	cursor   *os.File
	bytes    int64 // sum of segment sizes
	dropped  uint64
	damaged  uint64 // records lost to damage found by Open (also in dropped)
	dirty    bool   // appended since the last fsync
	buf      []byte // encoding scratch
	rd       reader
	closed   bool
	syncErr  error
	stopSync chan struct{}
	syncDone chan struct{}
}

// StoreOptions configures a Store; zero values mean the defaults.
type StoreOptions struct {
	// MaxBytes is the budget for the segments on disk (default 1 GiB).
	// When an append goes over it, the oldest segments are removed and
	// the unacknowledged messages in them counted as dropped.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment is started (default
	// 16 MiB, at most MaxBytes/4 so that dropping works in small steps).
	SegmentBytes int64
	// SyncEvery is how often appended data and the cursor are flushed to
	// the device (default 1s); negative: at every Append.
	SyncEvery time.Duration
}

// Defaults for StoreOptions.
const (
	DefaultStoreBytes   = 1 << 30
	DefaultSegmentBytes = 16 << 20
	DefaultSyncEvery    = time.Second
	minSegmentBytes     = 4 << 10
)

type segment struct {
	first uint64 // seq of its first record
	end   uint64 // seq after its last record
	size  int64
	path  string
}

// reader remembers where the last ReadFrom stopped, so that sequential
// reads do not scan a segment from its start.
type reader struct {
	seg *segment
	f   *os.File
	off int64  // file offset of record seq
	seq uint64 // next record's seq
	// data holds the file's bytes from dataOff on.
	data    []byte
	dataOff int64
}

const (
	recHeader  = 8
	bodyFixed  = 8 + 8 + 1 + 1
	flagRetain = 1 << 0
	flagReplay = 1 << 1
	// maxRecord bounds a record's body on reading, so that a damaged
	// length cannot make Open or ReadFrom allocate gigabytes.
	maxRecord = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// writeChunk bounds the bytes Append encodes before it writes them.
const writeChunk = 256 << 10

// ErrStoreClosed is returned by a Store's methods after Close.
var ErrStoreClosed = errors.New("store closed")

// OpenStore opens the store in dir, creating dir if needed, and recovers
// what an earlier process left there.
func OpenStore(dir string, opts StoreOptions) (*Store, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultStoreBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	opts.SegmentBytes = max(minSegmentBytes, min(opts.SegmentBytes, opts.MaxBytes/4))
	if opts.SyncEvery == 0 {
		opts.SyncEvery = DefaultSyncEvery
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: opts, next: 1, acked: 1}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	if opts.SyncEvery > 0 {
		s.stopSync, s.syncDone = make(chan struct{}), make(chan struct{})
		go s.syncLoop()
	}
	return s, nil
}

// recover reads the cursor and the segments.
func (s *Store) recover() error {
	var err error
	s.cursor, err = os.OpenFile(filepath.Join(s.dir, "cursor"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	var cb [12]byte
	if n, _ := s.cursor.ReadAt(cb[:], 0); n == len(cb) && crc32.Checksum(cb[:8], crcTable) == binary.LittleEndian.Uint32(cb[8:]) {
		s.acked = max(1, binary.LittleEndian.Uint64(cb[:8]))
	}
	s.ackDisk = s.acked

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || e.IsDir() {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil || first == 0 {
			continue // not ours
		}
		s.segs = append(s.segs, &segment{first: first, path: filepath.Join(s.dir, e.Name())})
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return cmp.Compare(a.first, b.first) })
	for i, sg := range s.segs {
		last := i == len(s.segs)-1
		if err := s.scan(sg, last); err != nil {
			return err
		}
		if i > 0 {
			prev := s.segs[i-1]
			if sg.first > prev.end { // records between them were lost
				s.lost(prev.end, sg.first)
			}
		}
		s.bytes += sg.size
	}
	if n := len(s.segs); n > 0 {
		s.next = s.segs[n-1].end
	}
	// The cursor may be ahead of the data (segments removed by hand) or
	// behind it (data of acknowledged segments already removed).
	s.next = max(s.next, s.acked)
	if len(s.segs) > 0 && s.segs[0].first > s.acked {
		s.lost(s.acked, s.segs[0].first)
		s.acked = s.segs[0].first
	}
	s.removeAcked()
	return s.openActive()
}

// lost counts records [from, to) that damage or a removed file took,
// where they were still unacknowledged.
func (s *Store) lost(from, to uint64) {
	from = max(from, s.acked)
	if to > from {
		s.dropped += to - from
		s.damaged += to - from
	}
}

// scan validates sg's records, sets its end and size, and truncates a
// torn or damaged tail of the last segment; in other segments the rest
// after damage is counted as lost when the next segment is seen.
func (s *Store) scan(sg *segment, last bool) error {
	f, err := os.Open(sg.path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := reader{seg: sg, f: f, seq: sg.first}
	good := int64(0)
	for {
		m, n, err := r.record()
		if err != nil {
			break // end of file, a torn write, or damage
		}
		if m.Seq != r.seq {
			break
		}
		r.seq++
		r.off += n
		good = r.off
	}
	sg.end, sg.size = r.seq, good
	if fi, err := f.Stat(); err == nil && fi.Size() > good {
		if last {
			if err := os.Truncate(sg.path, good); err != nil {
				return err
			}
		}
	}
	return nil
}

// openActive opens the last segment for appending, or starts one.
func (s *Store) openActive() error {
	if n := len(s.segs); n > 0 && s.segs[n-1].size < s.opts.SegmentBytes {
		f, err := os.OpenFile(s.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		s.active = f
		return nil
	}
	return s.startSegment()
}

// startSegment starts a new segment at s.next. Caller holds mu (or owns
// s during Open).
func (s *Store) startSegment() error {
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", s.next))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if s.active != nil {
		// The finished segment goes to the device before the new one is used.
		if err := s.active.Sync(); err != nil {
			f.Close()
			return err
		}
		s.active.Close()
	}
	syncDir(s.dir)
	s.active = f
	s.segs = append(s.segs, &segment{first: s.next, end: s.next, path: path})
	return nil
}

// Append writes ms as the next records, in order, setting each message's
// Seq. It returns the number of unacknowledged messages the byte budget
// dropped (the oldest ones, possibly some of ms if ms alone is larger than
// the budget).
func (s *Store) Append(ms []Message) (dropped int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrStoreClosed
	}
	for len(ms) > 0 {
		sg := s.segs[len(s.segs)-1]
		s.buf = s.buf[:0]
		k := 0
		// A write per writeChunk bytes: the buffer stays small, whatever the
		// batch.
		for k < len(ms) && (k == 0 || sg.size+int64(len(s.buf)) < s.opts.SegmentBytes && len(s.buf) < writeChunk) {
			ms[k].Seq = s.next + uint64(k)
			s.buf = appendRecord(s.buf, &ms[k])
			k++
		}
		if _, err := s.active.Write(s.buf); err != nil {
			// What was written of it is cut at the next Open.
			return dropped, fmt.Errorf("store %s: append: %w", s.dir, err)
		}
		s.next += uint64(k)
		sg.end = s.next
		sg.size += int64(len(s.buf))
		s.bytes += int64(len(s.buf))
		s.dirty = true
		ms = ms[k:]
		// A write error above returns with the records of this chunk not
		// counted; Seq of the later messages was not set by this call.
		if sg.size >= s.opts.SegmentBytes {
			if err := s.startSegment(); err != nil {
				return dropped, fmt.Errorf("store %s: new segment: %w", s.dir, err)
			}
		}
		dropped += s.enforceBudget()
	}
	if s.opts.SyncEvery < 0 {
		if err := s.syncLocked(); err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// enforceBudget removes the oldest segments while the store is over its
// budget, counting their unacknowledged records. The segment being
// written is never removed. Caller holds mu.
func (s *Store) enforceBudget() int {
	dropped := 0
	for s.bytes > s.opts.MaxBytes && len(s.segs) > 1 {
		sg := s.segs[0]
		if sg.end > s.acked {
			n := sg.end - max(sg.first, s.acked)
			dropped += int(n)
			s.dropped += n
			s.acked = sg.end
		}
		s.removeFirst()
	}
	return dropped
}

// removeFirst deletes the oldest segment. Caller holds mu.
func (s *Store) removeFirst() {
	sg := s.segs[0]
	if s.rd.seg == sg {
		s.rd.close()
	}
	os.Remove(sg.path)
	s.bytes -= sg.size
	s.segs[0] = nil
	s.segs = s.segs[1:]
}

// removeAcked deletes the segments whose records are all acknowledged,
// except the one being written. Caller holds mu.
func (s *Store) removeAcked() {
	for len(s.segs) > 1 && s.segs[0].end <= s.acked {
		s.removeFirst()
	}
}

// Ack records that every message with a sequence number below seq is
// finished with (delivered, or refused for good). The cursor reaches the
// device at the next sync; segments that hold only acknowledged messages
// are removed at once.
func (s *Store) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || seq <= s.acked {
		return
	}
	s.acked = min(seq, s.next)
	s.removeAcked()
}

// ReadFrom appends up to maxN messages to dst, starting at sequence number
// from (or at the oldest one kept, if from is older), in order. Meta is
// nil in what it returns; Seq is set. It returns dst unchanged when there
// is nothing at or after from.
func (s *Store) ReadFrom(from uint64, dst []Message, maxN int) ([]Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return dst, ErrStoreClosed
	}
	from = max(from, s.acked)
	limit := len(dst) + maxN
	for len(dst) < limit && from < s.next {
		i, _ := slices.BinarySearchFunc(s.segs, from, func(sg *segment, seq uint64) int {
			if sg.end <= seq {
				return -1
			}
			if sg.first > seq {
				return 1
			}
			return 0
		})
		if i == len(s.segs) {
			break
		}
		sg := s.segs[i]
		from = max(from, sg.first)
		if s.rd.seg != sg || s.rd.seq > from {
			if err := s.rd.open(sg); err != nil {
				return dst, err
			}
		}
		for s.rd.seq < from { // skip to from
			_, n, err := s.rd.record()
			if err != nil {
				return dst, s.readErr(sg, err)
			}
			s.rd.seq++
			s.rd.off += n
		}
		for len(dst) < limit && s.rd.seq < sg.end {
			m, n, err := s.rd.record()
			if err != nil {
				return dst, s.readErr(sg, err)
			}
			dst = append(dst, m)
			s.rd.seq++
			s.rd.off += n
		}
		from = s.rd.seq
	}
	return dst, nil
}

func (s *Store) readErr(sg *segment, err error) error {
	s.rd.close()
	return fmt.Errorf("store %s: read %s: %w", s.dir, filepath.Base(sg.path), err)
}

// StoreStats is a snapshot of a Store.
type StoreStats struct {
	Acked   uint64 // first unacknowledged sequence number
	Next    uint64 // sequence number of the next append
	Bytes   int64  // bytes in segments on disk
	Dropped uint64 // unacknowledged messages dropped: budget and damage
	Damaged uint64 // of those, lost to damage found at Open
}

// Pending is the number of unacknowledged messages.
func (st StoreStats) Pending() uint64 { return st.Next - st.Acked }

// Stats returns the store's counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Acked: s.acked, Next: s.next, Bytes: s.bytes, Dropped: s.dropped, Damaged: s.damaged}
}

// Sync flushes appended data and the cursor to the device.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrStoreClosed
	}
	return s.syncLocked()
}

func (s *Store) syncLocked() error {
	if s.dirty {
		if err := s.active.Sync(); err != nil {
			s.syncErr = err
			return fmt.Errorf("store %s: sync: %w", s.dir, err)
		}
		s.dirty = false
	}
	if s.acked != s.ackDisk {
		var cb [12]byte
		binary.LittleEndian.PutUint64(cb[:8], s.acked)
		binary.LittleEndian.PutUint32(cb[8:], crc32.Checksum(cb[:8], crcTable))
		if _, err := s.cursor.WriteAt(cb[:], 0); err != nil {
			return fmt.Errorf("store %s: cursor: %w", s.dir, err)
		}
		if err := s.cursor.Sync(); err != nil {
			return fmt.Errorf("store %s: cursor: %w", s.dir, err)
		}
		s.ackDisk = s.acked
	}
	return nil
}

func (s *Store) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.opts.SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopSync:
			return
		case <-t.C:
			s.mu.Lock()
			if !s.closed {
				s.syncLocked() // an error is kept in syncErr and returned by the next Sync
			}
			s.mu.Unlock()
		}
	}
}

// Close flushes and closes the store. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	err := s.syncLocked()
	s.closed = true
	s.closeFiles()
	s.mu.Unlock()
	if s.stopSync != nil {
		close(s.stopSync)
		<-s.syncDone
	}
	return err
}

func (s *Store) closeFiles() {
	s.rd.close()
	if s.active != nil {
		s.active.Close()
	}
	if s.cursor != nil {
		s.cursor.Close()
	}
}

// appendRecord encodes m as a record.
func appendRecord(dst []byte, m *Message) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recHeader)...)
	dst = binary.LittleEndian.AppendUint64(dst, m.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.TimeMs))
	var flags byte
	if m.Retain {
		flags |= flagRetain
	}
	if m.Replay {
		flags |= flagReplay
	}
	dst = append(dst, flags, byte(m.Quality))
	dst = binary.AppendUvarint(dst, uint64(len(m.Topic)))
	dst = append(dst, m.Topic...)
	dst = append(dst, m.Payload...)
	body := dst[start+recHeader:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, crcTable))
	return dst
}

// decodeBody parses a record's body. The message owns fresh memory.
func decodeBody(body []byte) (Message, error) {
	if len(body) < bodyFixed+1 {
		return Message{}, errors.New("record too short")
	}
	m := Message{
		Seq:     binary.LittleEndian.Uint64(body),
		TimeMs:  int64(binary.LittleEndian.Uint64(body[8:])),
		Retain:  body[16]&flagRetain != 0,
		Replay:  body[16]&flagReplay != 0,
		Quality: model.Quality(body[17]),
	}
	rest := body[bodyFixed:]
	tl, n := binary.Uvarint(rest)
	if n <= 0 || tl > uint64(len(rest)-n) {
		return Message{}, errors.New("bad topic length")
	}
	rest = rest[n:]
	m.Topic = string(rest[:tl])
	m.Payload = append([]byte(nil), rest[tl:]...)
	return m, nil
}

func (r *reader) open(sg *segment) error {
	r.close()
	f, err := os.Open(sg.path)
	if err != nil {
		return err
	}
	r.seg, r.f, r.off, r.seq = sg, f, 0, sg.first
	r.data, r.dataOff = r.data[:0], 0
	return nil
}

func (r *reader) close() {
	if r.f != nil {
		r.f.Close()
	}
	r.seg, r.f = nil, nil
}

// readChunk is how much a reader reads from a segment at a time.
const readChunk = 256 << 10

// record reads the record at r.off and returns it with its size on disk.
// It does not advance r.
func (r *reader) record() (Message, int64, error) {
	h, err := r.bytes(r.off, recHeader)
	if err != nil {
		return Message{}, 0, err
	}
	n := binary.LittleEndian.Uint32(h)
	sum := binary.LittleEndian.Uint32(h[4:])
	if n > maxRecord || n < bodyFixed+1 {
		return Message{}, 0, fmt.Errorf("record at offset %d: bad length %d", r.off, n)
	}
	body, err := r.bytes(r.off+recHeader, int(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, 0, err
	}
	if crc32.Checksum(body, crcTable) != sum {
		return Message{}, 0, fmt.Errorf("record at offset %d: checksum mismatch", r.off)
	}
	m, err := decodeBody(body)
	if err != nil {
		return Message{}, 0, fmt.Errorf("record at offset %d: %w", r.off, err)
	}
	return m, recHeader + int64(n), nil
}

// bytes returns n bytes of the file at off, from the read buffer, which
// it refills with at least readChunk bytes when they are not in it. The
// result is valid until the next call.
func (r *reader) bytes(off int64, n int) ([]byte, error) {
	if off >= r.dataOff && off+int64(n) <= r.dataOff+int64(len(r.data)) {
		i := off - r.dataOff
		return r.data[i : i+int64(n)], nil
	}
	size := max(n, readChunk)
	if cap(r.data) < size {
		r.data = make([]byte, size)
	}
	got, err := r.f.ReadAt(r.data[:size], off)
	r.data, r.dataOff = r.data[:got], off
	if got >= n {
		return r.data[:n], nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// syncDir flushes a directory's entries (a new or removed segment).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
