package harmonize

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/unsgate/unsgate/model"
)

// Plan is a compiled model: every tag's metadata, how samples map to tags,
// the compiled expressions and the order in which computed tags are
// recomputed. A Plan never changes after Compile, so any number of Engines
// and goroutines may share it.
type Plan struct {
	metas    []model.TagMeta // sorted by topic; Index = position
	tags     []*model.TagMeta
	specs    []tagSpec // parallel to metas
	assets   []assetSpec
	bindings []Binding
	// bySource maps a source, then a binding key, to the binding index g:
	// per source, the keys alone are hashed, and a map entry is 24 bytes,
	// not the 40 of a (source, key) pair.
	bySource map[string]map[string]int32
	// groupTags[groupStart[g]:groupStart[g+1]] are the tag indices bound
	// to binding g: one array for all, not a slice per binding.
	groupTags  []int32
	groupStart []int32
	heartbeats []int32 // tags with a heartbeat
	sources    []string
	sourceRefs map[string]model.Pos
	maxSlots   int // most names any one expression uses
}

// Binding is one raw value a source must read: every tag bound to the same
// (Source, Key) shares the reading.
type Binding struct {
	Source  string
	Key     string
	Address *model.Address // the plan's own copy; read-only
	// Poll is the poll interval; 0 means the source's default. When several
	// tags share the key, the smallest non-zero interval wins.
	Poll time.Duration
}

type bindKey struct{ source, address string }

// tagSpec is everything the engine needs to harmonize one tag.
type tagSpec struct {
	asset     int32
	addressed bool
	computed  bool       // has references to other tags: evaluated in dependency order
	out       model.Kind // declared or inferred output kind; KindNull = decided at run time
	width     uint8      // out's width in bits when narrower than 64 (TagMeta.Width); values are range-checked
	enum      map[int64]string
	deadband  model.Deadband
	onChange  bool
	heartbeat time.Duration

	prog       *program // nil = the raw value passes through
	slots      []slot   // one per name prog uses, in prog.names order
	refs       []int32  // tags the expression reads
	dependents []int32  // computed tags that read this tag
}

// slotKind says where a name's value comes from.
type slotKind uint8

const (
	slotRaw slotKind = iota
	slotParam
	slotTag
)

type slot struct {
	kind  slotKind
	typ   envType
	tag   int32       // slotTag
	param model.Value // slotParam
}

// assetSpec holds the recomputation order of an asset's computed tags:
// references never leave an asset, so ordering is per asset and small.
type assetSpec struct {
	order []int32
}

// Tags returns every tag's metadata, sorted by topic; a tag's Index is its
// position. The TagMetas are shared with the points the engine produces and
// must not be modified.
func (p *Plan) Tags() []*model.TagMeta { return slices.Clone(p.tags) }

// Bindings returns what the sources must read: unique (Source, Key) pairs,
// sorted by source, then key.
func (p *Plan) Bindings() []Binding { return slices.Clone(p.bindings) }

// Sources returns the ids of every source the model names, sorted.
func (p *Plan) Sources() []string { return slices.Clone(p.sources) }

// SourceRefs maps each source id the model names to the first place it is
// named, so that the gateway can report an unknown source at its position.
func (p *Plan) SourceRefs() map[string]model.Pos { return maps.Clone(p.sourceRefs) }

// finishBindings sorts the bindings and builds the lookup table.
func (p *Plan) finishBindings(groups map[bindKey]*bindGroup) {
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b bindKey) int {
		return cmp.Or(cmp.Compare(a.source, b.source), cmp.Compare(a.address, b.address))
	})
	n := 0
	for _, g := range groups {
		n += len(g.tags)
	}
	perSource := map[string]int{}
	for _, k := range keys {
		perSource[k.source]++
	}
	p.bySource = make(map[string]map[string]int32, len(perSource))
	for src, n := range perSource {
		p.bySource[src] = make(map[string]int32, n)
	}
	p.groupTags = make([]int32, 0, n)
	p.groupStart = make([]int32, len(keys)+1)
	p.bindings = make([]Binding, len(keys))
	for i, k := range keys {
		g := groups[k]
		slices.Sort(g.tags)
		p.bySource[k.source][k.address] = int32(i)
		p.groupTags = append(p.groupTags, g.tags...)
		p.groupStart[i+1] = int32(len(p.groupTags))
		p.bindings[i] = Binding{Source: k.source, Key: k.address, Address: g.addr, Poll: g.poll}
	}
}

// binding returns the index of the binding of (source, key).
func (p *Plan) binding(source, key string) (int32, bool) {
	g, ok := p.bySource[source][key]
	return g, ok
}

// group returns the tag indices bound to binding g.
func (p *Plan) group(g int32) []int32 { return p.groupTags[p.groupStart[g]:p.groupStart[g+1]] }

type bindGroup struct {
	addr *model.Address
	poll time.Duration
	tags []int32
}

// cloneAddress copies a so that the plan does not share mutable state with
// the model it was compiled from.
func cloneAddress(a *model.Address) *model.Address {
	c := *a
	if a.Modbus != nil {
		m := *a.Modbus
		c.Modbus = &m
	}
	if a.OPCUA != nil {
		u := *a.OPCUA
		u.BrowsePath = append([]string(nil), a.OPCUA.BrowsePath...)
		c.OPCUA = &u
	}
	return &c
}
