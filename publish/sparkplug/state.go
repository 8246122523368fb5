package sparkplug

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/unsgate/unsgate/model"
)

// tagset is the edge node's devices and metrics for one set of tags.
type tagset struct {
	devices  []*device // sorted by id
	byTopic  map[string]*metric
	byIndex  []*metric // by TagMeta.Index, when the metas carry one
	bySource map[string][]*device
	invalid  []string // tags that cannot be metrics, with the reason
}

// device is one model asset.
type device struct {
	id      string
	source  string // "" when no source feeds it: it never dies
	metrics []*metric
	birthT  string // DBIRTH topic
	dataT   string // DDATA topic
	deathT  string // DDEATH topic

	// alive is what is current (set as source events are queued).
	alive atomic.Bool

	// The host's view, kept by the sink's Run goroutine only.
	born     bool
	bornDead bool   // born to carry history while its source is down
	pend     []byte // DDATA metrics being gathered
	pendIdx  []int  // indices of their messages in the batch
	pendGen  uint64 // generation of pend, for metric.pendGen
}

// metric is one tag of a device.
type metric struct {
	dev      *device
	name     string
	alias    uint64
	meta     *model.TagMeta
	declared DataType

	// What is current, under Sink.mu: the newest queued encoding (the
	// datatype byte and the session-free fields) and its time.
	cur   []byte
	curMs int64

	// The host's view (Run goroutine only).
	bornDT  DataType // datatype in the last birth
	bornMs  int64    // time of the value in the last birth
	bornVal []byte   // the value in the last birth, as queued
	pendGen uint64   // == dev.pendGen when the metric is in dev.pend
	pendMs  int64    // time of its last value in dev.pend
}

// deviceID maps an asset path to a device id: the prefix cut, the other
// levels joined with '.' (UNS levels never contain '.', so ids stay
// unique).
func deviceID(asset, prefix string) string {
	rest := asset
	if prefix != "" {
		if r, ok := strings.CutPrefix(asset, prefix+"/"); ok {
			rest = r
		}
	}
	return strings.ReplaceAll(rest, "/", ".")
}

// buildTagset groups tags into devices and gives every metric its alias
// (new ones are added to aliases). Tags without an asset or with a name
// Sparkplug cannot carry are left out and listed in invalid.
func buildTagset(tags []*model.TagMeta, prefix, group, edge string, aliases *aliasTable) *tagset {
	ts := &tagset{byTopic: map[string]*metric{}, bySource: map[string][]*device{}}
	byID := map[string]*device{}
	maxIndex := -1
	for _, t := range tags {
		if t == nil {
			continue
		}
		if t.Asset == "" {
			ts.invalid = append(ts.invalid, t.Topic+": not part of an asset")
			continue
		}
		id := deviceID(t.Asset, prefix)
		if why := ValidID(id); why != "" {
			ts.invalid = append(ts.invalid, fmt.Sprintf("%s: device id %q %s", t.Topic, id, why))
			continue
		}
		d := byID[id]
		if d == nil {
			d = &device{id: id,
				birthT: Namespace + "/" + group + "/DBIRTH/" + edge + "/" + id,
				dataT:  Namespace + "/" + group + "/DDATA/" + edge + "/" + id,
				deathT: Namespace + "/" + group + "/DDEATH/" + edge + "/" + id,
			}
			byID[id] = d
			ts.devices = append(ts.devices, d)
		}
		if d.source == "" && t.Source != "" {
			d.source = t.Source
		}
		m := &metric{dev: d, name: t.Name, meta: t, declared: declaredType(t)}
		d.metrics = append(d.metrics, m)
		ts.byTopic[t.Topic] = m
		maxIndex = max(maxIndex, t.Index)
	}
	slices.SortFunc(ts.devices, func(a, b *device) int { return strings.Compare(a.id, b.id) })
	// Aliases in a stable order, so a fresh table numbers the same model
	// the same way.
	for _, d := range ts.devices {
		for _, m := range d.metrics {
			m.alias = aliases.alias(d.id + "/" + m.name)
		}
		if d.source != "" {
			ts.bySource[d.source] = append(ts.bySource[d.source], d)
		} else {
			d.alive.Store(true)
		}
	}
	if maxIndex >= 0 && maxIndex < 4*len(ts.byTopic)+1024 {
		ts.byIndex = make([]*metric, maxIndex+1)
		for _, m := range ts.byTopic {
			if m.meta.Index >= 0 {
				ts.byIndex[m.meta.Index] = m
			}
		}
	}
	return ts
}

// lookup finds the metric of a queued message.
func (ts *tagset) lookup(meta *model.TagMeta, topic string) *metric {
	if meta != nil && meta.Index >= 0 && meta.Index < len(ts.byIndex) {
		if m := ts.byIndex[meta.Index]; m != nil && m.meta == meta {
			return m
		}
	}
	return ts.byTopic[topic]
}

// aliasTable numbers metrics: a metric keeps its alias for as long as the
// table exists, across restarts when it is saved, and whatever else the
// model gains or loses. Aliases are never reused.
type aliasTable struct {
	path    string            // "" : memory only
	Next    uint64            `json:"next"`
	Aliases map[string]uint64 `json:"aliases"`
	dirty   bool
}

func loadAliases(dir string) (*aliasTable, error) {
	t := &aliasTable{Next: 1, Aliases: map[string]uint64{}}
	if dir == "" {
		return t, nil
	}
	t.path = filepath.Join(dir, "aliases.json")
	data, err := os.ReadFile(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, t); err != nil {
		return nil, fmt.Errorf("%s: %v (remove the file to number the metrics afresh; hosts re-learn them at the next birth)", t.path, err)
	}
	if t.Aliases == nil {
		t.Aliases = map[string]uint64{}
	}
	for _, a := range t.Aliases {
		t.Next = max(t.Next, a+1)
	}
	return t, nil
}

func (t *aliasTable) alias(key string) uint64 {
	if a, ok := t.Aliases[key]; ok {
		return a
	}
	a := t.Next
	t.Next++
	t.Aliases[key] = a
	t.dirty = true
	return a
}

func (t *aliasTable) save() error {
	if t.path == "" || !t.dirty {
		return nil
	}
	data, err := json.MarshalIndent(t, "", " ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(t.path, data); err != nil {
		return err
	}
	t.dirty = false
	return nil
}

// bdSeqFile keeps the last bdSeq used, so that a restarted gateway goes on
// from it.
type bdSeqFile struct {
	path string
	last int // -1: none yet
}

func loadBdSeq(dir string) (*bdSeqFile, error) {
	b := &bdSeqFile{last: -1}
	if dir == "" {
		return b, nil
	}
	b.path = filepath.Join(dir, "bdseq")
	data, err := os.ReadFile(b.path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 0 || n > 255 {
		return nil, fmt.Errorf("%s: %q is not a bdSeq (0..255); remove the file to start again at 0", b.path, strings.TrimSpace(string(data)))
	}
	b.last = n
	return b, nil
}

// next advances the counter and saves it before it is used.
func (b *bdSeqFile) next() (uint64, error) {
	n := (b.last + 1) % 256
	if b.path != "" {
		if err := writeFileAtomic(b.path, []byte(strconv.Itoa(n)+"\n")); err != nil {
			return 0, fmt.Errorf("saving bdSeq: %w", err)
		}
	}
	b.last = n
	return uint64(n), nil
}

// writeFileAtomic replaces path with data: a crash leaves the old file or
// the new one, never a mix.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
