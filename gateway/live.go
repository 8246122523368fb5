package gateway

import (
	"math"
	"strings"
	"sync"
	"time"

	"github.com/unsgate/unsgate/model"
)

// historyLen is how many recent numeric values the live store keeps per
// tag, for the status page's sparkline: with a float64 value and an int32
// time each, 384 bytes per tag (3.8 MB at 10k tags).
const historyLen = 32

// histUnit is the resolution of the history's times: an int32 of tenths of
// a second spans ±6.8 years around the store's epoch.
const histUnit = int64(100 * time.Millisecond)

// liveChunk is how many tags a reader looks at per hold of the lock, so a
// scan of a large plant never holds up Record (the sources' hot path) for
// more than a few microseconds.
const liveChunk = 512

// liveStore is the status page's view of the data: the latest point of
// every tag of the running plan and a small ring of its recent numeric
// values. Gateway.emit records every batch into it, so Record is cheap: one
// lock per batch, no allocation, no map lookup while the plan is current.
// Readers (the HTTP handlers) take the lock in chunks and copy out.
type liveStore struct {
	mu    sync.RWMutex
	epoch int64 // unix ns; the history's times count from it
	tags  []*model.TagMeta
	index model.TopicIndex // finds tags by topic
	slots []liveSlot
	histV []float64 // historyLen per tag
	histT []int32   // tenths of a second since epoch, parallel to histV
	seq   uint64    // bumped for every change recorded
	gen   uint64    // bumped by SetTags
}

// liveSlot is one tag's latest point.
type liveSlot struct {
	value, raw model.Value
	t          int64  // unix ns of the point's timestamp, 0 when it has none
	seq        uint64 // store seq of the last change; 0 = no point yet
	status     uint32
	q          model.Quality
	stale      bool
	hn, hnext  uint8 // values in the ring, next position to write
}

func newLiveStore(tags []*model.TagMeta) *liveStore {
	// seq starts at 1 so that no seq handed to readers means "all" (0).
	s := &liveStore{epoch: time.Now().Truncate(time.Second).UnixNano(), seq: 1}
	s.SetTags(tags)
	return s
}

// SetTags makes the store follow a new plan (a reload): tags are the new
// plan's tags (Plan.Tags()). Tags whose topic stays keep their latest point
// and history; the others start empty. Readers see a new generation and
// start over.
func (s *liveStore) SetTags(tags []*model.TagMeta) {
	index := model.NewTopicIndex(tags)
	slots := make([]liveSlot, len(tags))
	histV := make([]float64, len(tags)*historyLen)
	histT := make([]int32, len(tags)*historyLen)

	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range tags {
		j, ok := s.find(t.Topic)
		if !ok || s.slots[j].seq == 0 {
			continue
		}
		s.seq++
		slots[i] = s.slots[j]
		slots[i].seq = s.seq
		copy(histV[i*historyLen:(i+1)*historyLen], s.histV[int(j)*historyLen:])
		copy(histT[i*historyLen:(i+1)*historyLen], s.histT[int(j)*historyLen:])
	}
	s.tags, s.index, s.slots, s.histV, s.histT = tags, index, slots, histV, histT
	s.gen++
}

// find returns the index of the tag at topic. Caller holds mu.
func (s *liveStore) find(topic string) (int32, bool) {
	i, ok := s.index.Find(topic)
	return int32(i), ok
}

// Record stores a batch of points. Points of tags the store does not know
// (of an older plan, arriving around a reload) are looked up by topic, and
// dropped if the topic is gone. A point that repeats the tag's latest one
// (a heartbeat) changes nothing.
func (s *liveStore) Record(points []model.Point) {
	if len(points) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range points {
		p := &points[i]
		if p.Meta == nil {
			continue
		}
		idx := p.Meta.Index
		if idx < 0 || idx >= len(s.tags) || s.tags[idx] != p.Meta {
			j, ok := s.find(p.Meta.Topic)
			if !ok {
				continue
			}
			idx = int(j)
		}
		var t int64
		if !p.Time.IsZero() {
			t = p.Time.UnixNano()
		}
		sl := &s.slots[idx]
		if sl.seq != 0 && sl.t == t && sl.q == p.Quality && sl.stale == p.Stale && sl.status == p.Status &&
			sl.value.Equal(p.Value) && sl.raw.Equal(p.Raw) {
			continue
		}
		s.seq++
		sl.value, sl.raw, sl.t, sl.seq, sl.status, sl.q, sl.stale = p.Value, p.Raw, t, s.seq, p.Status, p.Quality, p.Stale
		if f, ok := p.Value.AsFloat(); ok && p.Quality != model.QualityBad && !math.IsNaN(f) && !math.IsInf(f, 0) {
			k := idx*historyLen + int(sl.hnext)
			s.histV[k], s.histT[k] = f, s.histTime(t)
			sl.hnext = (sl.hnext + 1) % historyLen
			sl.hn = min(sl.hn+1, historyLen)
		}
	}
}

func (s *liveStore) histTime(t int64) int32 {
	if t == 0 {
		return 0
	}
	d := (t - s.epoch) / histUnit
	return int32(max(min(d, math.MaxInt32), math.MinInt32))
}

// tagRow is a copy of one tag's latest point, for the tag table.
type tagRow struct {
	meta       *model.TagMeta
	value, raw model.Value
	t          int64 // unix ns, 0 = none
	status     uint32
	q          model.Quality
	stale      bool
	seen       bool
}

// rowsSince appends the rows of the tags match accepts (nil: all) whose
// latest point changed after seq since (0: every tag, seen or not), up to
// limit rows (0: no limit). It returns the rows, the store's seq and
// generation as of the start of the scan (pass them back to get the next
// changes), and how many tags were selected in all, beyond limit too.
func (s *liveStore) rowsSince(dst []tagRow, since uint64, match func(*model.TagMeta) bool, limit int) (rows []tagRow, seq, gen uint64, selected int) {
	for attempt := 0; ; attempt++ {
		rows, selected = dst[:0], 0
		s.mu.RLock()
		seq, gen = s.seq, s.gen
		n := len(s.slots)
		s.mu.RUnlock()
		restarted := false
		for from := 0; from < n && !restarted; from += liveChunk {
			s.mu.RLock()
			if s.gen != gen {
				// A reload swapped the tags under the scan: start over
				// (twice at most; then take what the scan has).
				s.mu.RUnlock()
				restarted = attempt < 2
				break
			}
			for i := from; i < min(from+liveChunk, n); i++ {
				sl := &s.slots[i]
				if since != 0 && sl.seq <= since {
					continue
				}
				if match != nil && !match(s.tags[i]) {
					continue
				}
				selected++
				if limit > 0 && len(rows) >= limit {
					continue
				}
				rows = append(rows, tagRow{meta: s.tags[i], value: sl.value, raw: sl.raw, t: sl.t, status: sl.status,
					q: sl.q, stale: sl.stale, seen: sl.seq != 0})
			}
			s.mu.RUnlock()
		}
		if !restarted {
			return rows, seq, gen, selected
		}
	}
}

// row returns the latest point of the tag at topic.
func (s *liveStore) row(topic string) (tagRow, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.find(topic)
	if !ok {
		return tagRow{}, false
	}
	sl := &s.slots[i]
	return tagRow{meta: s.tags[i], value: sl.value, raw: sl.raw, t: sl.t, status: sl.status, q: sl.q,
		stale: sl.stale, seen: sl.seq != 0}, true
}

// histPoint is one value of a tag's recent history.
type histPoint struct {
	t time.Time
	v float64
}

// history returns the recent numeric values of the tag at topic, oldest
// first; ok is false for an unknown topic.
func (s *liveStore) history(topic string) (meta *model.TagMeta, points []histPoint, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.find(topic)
	if !ok {
		return nil, nil, false
	}
	sl := &s.slots[i]
	points = make([]histPoint, 0, sl.hn)
	base := int(i) * historyLen
	for k := range int(sl.hn) {
		j := base + (int(sl.hnext)+historyLen-int(sl.hn)+k)%historyLen
		points = append(points, histPoint{t: time.Unix(0, s.epoch+int64(s.histT[j])*histUnit), v: s.histV[j]})
	}
	return s.tags[i], points, true
}

// tagCounts counts tags by the state of their latest point. The counts
// are disjoint: a stale tag counts as stale only, a tag without any point
// yet as waiting.
type tagCounts struct {
	Total     int `json:"total"`
	Good      int `json:"good"`
	Uncertain int `json:"uncertain"`
	Bad       int `json:"bad"`
	Stale     int `json:"stale"`
	Waiting   int `json:"waiting"`
}

func (c *tagCounts) add(sl *liveSlot) {
	c.Total++
	switch {
	case sl.seq == 0:
		c.Waiting++
	case sl.stale:
		c.Stale++
	case sl.q == model.QualityGood:
		c.Good++
	case sl.q == model.QualityUncertain:
		c.Uncertain++
	default:
		c.Bad++
	}
}

// counts returns the counts over all tags and per source (derived tags,
// which have none, count in the total only).
func (s *liveStore) counts() (all tagCounts, bySource map[string]tagCounts) {
	bySource = map[string]tagCounts{}
	s.mu.RLock()
	n := len(s.slots)
	s.mu.RUnlock()
	for from := 0; from < n; from += liveChunk {
		s.mu.RLock()
		for i := from; i < min(from+liveChunk, len(s.slots)); i++ {
			sl := &s.slots[i]
			all.add(sl)
			if src := s.tags[i].Source; src != "" {
				c := bySource[src]
				c.add(sl)
				bySource[src] = c
			}
		}
		s.mu.RUnlock()
	}
	return all, bySource
}

// tagFilter is the status page's tag filter: a case-insensitive substring
// of the UNS path ("line1/filler", "temperature"). An empty filter matches
// everything (nil).
func tagFilter(filter string) func(*model.TagMeta) bool {
	filter = strings.TrimSpace(filter)
	if filter == "" {
		return nil
	}
	lower := strings.ToLower(filter)
	return func(m *model.TagMeta) bool { return containsFold(m.Topic, lower) }
}

// containsFold reports whether s contains lower, which is lower case,
// ignoring ASCII case (UNS levels are ASCII), without allocating.
func containsFold(s, lower string) bool {
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for j < n {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}
