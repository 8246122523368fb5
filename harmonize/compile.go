package harmonize

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"github.com/unsgate/unsgate/model"
)

// program is one compiled expression for one set of name types. Instances
// of an asset type share it: loads go through frame slots, never through
// asset-specific state.
type program struct {
	text   string
	vm     *vm.Program
	fast   typedFn
	isFast bool
	names  []string // sorted; slot i holds names[i]
	types  []envType
	result envType
	err    *exprError // compile error, reported at each tag using the program
}

// exprError is an error inside an expression text: a 1-based line and a
// 0-based rune column relative to the text.
type exprError struct {
	line, col int
	msg       string
}

// scanned is the result of parsing an expression text once: the names it
// uses with their first occurrence.
type scanned struct {
	names []nameUse
	err   *exprError
}

type nameUse struct {
	name      string
	line, col int
}

// Compile checks m and builds its Plan. The error, if any, is a
// model.Diagnostics listing every problem found, each at its file:line:col.
func Compile(m *model.Model) (*Plan, error) {
	c := &compiler{
		programs: make(map[string]*program),
		scans:    make(map[string]*scanned),
		slots:    make(map[*program][]slot),
	}
	return c.compile(m)
}

type compiler struct {
	ds       model.Diagnostics
	plan     *Plan
	index    map[*model.Tag]int32
	programs map[string]*program
	scans    map[string]*scanned
	slots    map[*program][]slot // the last slots made for each program, to share equal ones
}

func (c *compiler) compile(m *model.Model) (*Plan, error) {
	if m == nil {
		m = &model.Model{}
	}
	p := &Plan{sourceRefs: make(map[string]model.Pos)}
	c.plan = p

	type entry struct {
		asset int
		tag   *model.Tag
	}
	var all []entry
	for ai, a := range m.Assets {
		for _, t := range a.Tags {
			all = append(all, entry{ai, t})
		}
	}
	slices.SortStableFunc(all, func(a, b entry) int { return cmp.Compare(a.tag.Topic, b.tag.Topic) })

	p.metas = make([]model.TagMeta, len(all))
	p.tags = make([]*model.TagMeta, len(all))
	p.specs = make([]tagSpec, len(all))
	p.assets = make([]assetSpec, len(m.Assets))
	c.index = make(map[*model.Tag]int32, len(all))
	for i, e := range all {
		a := m.Assets[e.asset]
		t := e.tag
		meta := &p.metas[i]
		*meta = model.TagMeta{
			Topic:       t.Topic,
			Asset:       a.Path,
			Type:        a.Type,
			Name:        t.Name,
			Unit:        t.Unit,
			Description: t.Description,
			Index:       i,
		}
		if t.Address != nil {
			meta.Source = a.Source
			meta.Address = t.Address.Text
		}
		p.tags[i] = meta
		p.specs[i] = tagSpec{
			asset:     int32(e.asset),
			addressed: t.Address != nil,
			enum:      t.Enum,
			deadband:  t.Deadband,
			onChange:  t.OnChange,
			heartbeat: t.Heartbeat,
		}
		c.index[t] = int32(i)
		if t.Heartbeat > 0 {
			p.heartbeats = append(p.heartbeats, int32(i))
		}
	}

	for ai, a := range m.Assets {
		c.asset(ai, a)
	}
	c.bindings(m)

	for i := range p.specs {
		for _, r := range p.specs[i].refs {
			p.specs[r].dependents = append(p.specs[r].dependents, int32(i))
		}
		p.maxSlots = max(p.maxSlots, len(p.specs[i].slots))
	}
	if err := c.ds.Err(); err != nil {
		return nil, err
	}
	return p, nil
}

// bindings groups addressed tags by (source, key) and records the sources.
func (c *compiler) bindings(m *model.Model) {
	p := c.plan
	groups := make(map[bindKey]*bindGroup)
	for _, a := range m.Assets {
		if a.Source != "" {
			if prev, ok := p.sourceRefs[a.Source]; !ok || posLess(a.SourcePos, prev) {
				p.sourceRefs[a.Source] = a.SourcePos
			}
		}
		for _, t := range a.Tags {
			if t.Address == nil {
				continue
			}
			if a.Source == "" {
				c.ds.Add(t.Pos, "tag %s has an address but asset %s names no source", t.Name, a.Path)
				continue
			}
			key := t.Address.Key
			if key == "" && t.Address.Modbus != nil {
				key = t.Address.Modbus.Key()
			}
			if key == "" {
				c.ds.Add(t.Pos, "address %q has no binding key", t.Address.Text)
				continue
			}
			k := bindKey{a.Source, key}
			g := groups[k]
			if g == nil {
				g = &bindGroup{addr: cloneAddress(t.Address)}
				groups[k] = g
			}
			poll := cmp.Or(t.Poll, a.Poll)
			if poll > 0 && (g.poll == 0 || poll < g.poll) {
				g.poll = poll
			}
			g.tags = append(g.tags, c.index[t])
		}
	}
	p.finishBindings(groups)
	p.sources = slices.Sorted(maps.Keys(p.sourceRefs))
}

func posLess(a, b model.Pos) bool {
	return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col)) < 0
}

// identOf is how an expression names a tag: '/' and '-' are not valid in
// identifiers, so counters/good is counters_good.
func identOf(tagName string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '-' {
			return '_'
		}
		return r
	}, tagName)
}

// nameRef is what a name means inside one asset's expressions.
type nameRef struct {
	kind      slotKind
	tag       int // local index in Asset.Tags
	param     model.Value
	ambiguous string // non-empty: why the name cannot be used
}

// assetTag is the per-asset working state of one tag.
type assetTag struct {
	tag    *model.Tag
	global int32
	uses   []resolved // names the expression uses, sorted by name
	refs   []int      // local indices of referenced tags
	failed bool       // an error was reported; do not compile or order it
	out    model.Kind
}

type resolved struct {
	name string
	ref  nameRef
	raw  bool
}

func (c *compiler) asset(ai int, a *model.Asset) {
	names := make(map[string]nameRef, len(a.Params)+len(a.Tags))
	for _, name := range slices.Sorted(maps.Keys(a.Params)) {
		names[name] = nameRef{kind: slotParam, param: a.Params[name]}
	}
	tags := make([]assetTag, len(a.Tags))
	for i, t := range a.Tags {
		tags[i] = assetTag{tag: t, global: c.index[t]}
		id := identOf(t.Name)
		prev, clash := names[id]
		switch {
		case !clash:
			names[id] = nameRef{kind: slotTag, tag: i}
		case prev.ambiguous != "":
			// already ambiguous
		case prev.kind == slotParam:
			prev.ambiguous = fmt.Sprintf("both parameter %q and tag %q", id, t.Name)
			names[id] = prev
		default:
			prev.ambiguous = fmt.Sprintf("both tag %q and tag %q", a.Tags[prev.tag].Name, t.Name)
			names[id] = prev
		}
	}

	for i := range tags {
		c.resolve(a, names, tags, i)
	}
	order := c.order(tags)
	for _, i := range order {
		c.compileTag(tags, i)
	}
	for _, i := range order {
		at := &tags[i]
		if !at.failed && len(at.refs) > 0 {
			c.plan.assets[ai].order = append(c.plan.assets[ai].order, at.global)
		}
	}
}

// resolve finds what every name in tag i's expression refers to.
func (c *compiler) resolve(a *model.Asset, names map[string]nameRef, tags []assetTag, i int) {
	at := &tags[i]
	t := at.tag
	if t.Expr == "" {
		if t.Address == nil {
			c.ds.Add(t.Pos, "derived tag %s needs an expression (expr)", t.Name)
			at.failed = true
		}
		return
	}
	sc := c.scan(t.Expr)
	if sc.err != nil {
		c.exprDiag(t, sc.err)
		at.failed = true
		return
	}
	for _, use := range sc.names {
		ref, found := names[use.name]
		isRaw := use.name == "raw" && t.Address != nil
		switch {
		case use.name == "$env":
			c.diagAt(t, use, "expression: $env is not supported; use names directly")
		case isRaw && found:
			c.diagAt(t, use, `expression: name "raw" is ambiguous: both the raw value and tag %q`, a.Tags[ref.tag].Name)
		case isRaw:
			at.uses = append(at.uses, resolved{name: "raw", raw: true})
			continue
		case found && ref.ambiguous != "":
			c.diagAt(t, use, "expression: name %q is ambiguous: %s", use.name, ref.ambiguous)
		case found:
			at.uses = append(at.uses, resolved{name: use.name, ref: ref})
			if ref.kind == slotTag && !slices.Contains(at.refs, ref.tag) {
				at.refs = append(at.refs, ref.tag)
			}
			continue
		case use.name == "raw":
			c.diagAt(t, use, "expression: raw is only available in tags with an address; %s is a derived tag", t.Name)
		case isBuiltin(use.name):
			continue // a builtin function used as a value: the type checker decides
		default:
			msg := fmt.Sprintf("expression: unknown name %q", use.name)
			if s := model.Suggest(use.name, candidates(names, tags, i)); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			c.diagAt(t, use, "%s", msg)
		}
		at.failed = true
	}
	if t.Address == nil && len(at.refs) == 0 && !at.failed {
		c.ds.Add(t.ExprPos, "expression: derived tag %s must reference at least one other tag", t.Name)
		at.failed = true
	}
	slices.Sort(at.refs)
	slices.SortFunc(at.uses, func(x, y resolved) int { return cmp.Compare(x.name, y.name) })
}

func isBuiltin(name string) bool {
	_, ok := builtin.Index[name]
	return ok
}

// candidates are the names tag i's expression could have meant.
func candidates(names map[string]nameRef, tags []assetTag, i int) []string {
	var out []string
	for n, ref := range names {
		if ref.kind == slotTag && ref.tag == i {
			continue
		}
		out = append(out, n)
	}
	if tags[i].tag.Address != nil {
		out = append(out, "raw")
	}
	return out
}

// order returns the asset's tags with every tag after the tags it reads,
// reporting each cycle once and marking its members failed.
func (c *compiler) order(tags []assetTag) []int {
	const (
		white = iota
		grey
		black
	)
	color := make([]uint8, len(tags))
	var order, stack []int
	reported := make(map[string]bool)
	var visit func(i int)
	visit = func(i int) {
		color[i] = grey
		stack = append(stack, i)
		for _, r := range tags[i].refs {
			switch color[r] {
			case white:
				visit(r)
			case grey:
				start := slices.Index(stack, r)
				c.cycle(tags, stack[start:], reported)
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		order = append(order, i)
	}
	for i := range tags {
		if color[i] == white {
			visit(i)
		}
	}
	return order
}

func (c *compiler) cycle(tags []assetTag, members []int, reported map[string]bool) {
	// Start the description at the member declared first, so the message
	// does not depend on where the search entered the cycle.
	first := slices.Index(members, slices.Min(members))
	rot := append(slices.Clone(members[first:]), members[:first]...)
	var names []string
	for _, m := range rot {
		names = append(names, tags[m].tag.Name)
		tags[m].failed = true
	}
	names = append(names, tags[rot[0]].tag.Name)
	desc := strings.Join(names, " -> ")
	if reported[desc] {
		return
	}
	reported[desc] = true
	c.ds.Add(tags[rot[0]].tag.ExprPos, "cycle: %s", desc)
}

// compileTag compiles tag i's expression and works out its output kind.
// Tags it reads are already done (order).
func (c *compiler) compileTag(tags []assetTag, i int) {
	at := &tags[i]
	t := at.tag
	spec := &c.plan.specs[at.global]
	meta := &c.plan.metas[at.global]

	var in model.Kind // kind of the value before enum / datatype
	inPos := t.Pos
	switch {
	case at.failed:
		at.out = model.KindNull
		return
	case t.Expr != "":
		inPos = t.ExprPos
		var typesOf []envType
		spec.slots = make([]slot, len(at.uses))
		for k, u := range at.uses {
			s := slot{kind: slotRaw}
			switch {
			case u.raw:
				s.typ = envTypeOf(rawKind(t))
			case u.ref.kind == slotParam:
				s = slot{kind: slotParam, param: u.ref.param, typ: envTypeOf(u.ref.param.Kind())}
			default:
				s = slot{kind: slotTag, tag: tags[u.ref.tag].global, typ: envTypeOf(tags[u.ref.tag].out)}
			}
			spec.slots[k] = s
			typesOf = append(typesOf, s.typ)
		}
		prog := c.program(t.Expr, at.uses, typesOf)
		if prog.err != nil {
			c.exprDiag(t, prog.err)
			at.failed = true
			spec.slots = nil
			return
		}
		spec.prog = prog
		// Instances of a type that read only their raw value (or equal
		// parameters) have equal slots: they share one slice.
		if shared, ok := c.slots[prog]; ok && slices.Equal(shared, spec.slots) {
			spec.slots = shared
		} else {
			c.slots[prog] = spec.slots
		}
		for _, r := range at.refs {
			spec.refs = append(spec.refs, tags[r].global)
		}
		spec.computed = len(spec.refs) > 0
		in = prog.result.kind()
	default:
		in = rawKind(t)
	}

	out := in
	var width uint8
	switch {
	case t.Width != 0 && !validWidth(t.Datatype, t.Width):
		// Only a model built in Go gets here: the loader knows the names.
		c.ds.Add(t.Pos, "datatype %s has no %d-bit variant", t.Datatype, t.Width)
		at.failed = true
	case t.Enum != nil:
		if t.Datatype != model.KindNull && t.Datatype != model.KindString {
			c.ds.Add(t.Pos, "enum yields strings, but datatype is %s", t.TypeName())
			at.failed = true
		}
		if !enumInput(in) {
			c.ds.Add(inPos, "enum needs an integer value, but %s yields %s", what(t), in)
			at.failed = true
		}
		out = model.KindString
	case t.Datatype != model.KindNull:
		if !convertible(in, t.Datatype) {
			c.ds.Add(inPos, "%s yields %s, which cannot be converted to datatype %s", what(t), in, t.TypeName())
			at.failed = true
		}
		out, width = t.Datatype, t.Width
	case t.Expr == "" && t.Address != nil && t.Address.Modbus != nil:
		// A Modbus value passed through keeps its register type's width;
		// an OPC UA value's type is only known at run time.
		width = t.Address.Modbus.Type.Width()
	}
	spec.out, spec.width = out, width
	meta.Datatype, meta.Width = out, width
	at.out = out
}

// validWidth reports whether kind k has a datatype narrowed to width bits.
func validWidth(k model.Kind, width uint8) bool {
	switch k {
	case model.KindInt, model.KindUint:
		return width == 8 || width == 16 || width == 32
	case model.KindFloat:
		return width == 32
	}
	return width == 0
}

func what(t *model.Tag) string {
	if t.Expr != "" {
		return "the expression"
	}
	return "the raw value"
}

func rawKind(t *model.Tag) model.Kind {
	if t.Address == nil || t.Address.Modbus == nil {
		return model.KindNull
	}
	return t.Address.Modbus.Type.ValueKind()
}

// program compiles text for the given name types, once per combination.
func (c *compiler) program(text string, uses []resolved, typesOf []envType) *program {
	var key strings.Builder
	key.WriteString(text)
	for k, u := range uses {
		key.WriteByte(0)
		key.WriteString(u.name)
		key.WriteByte('=')
		key.WriteString(typesOf[k].String())
	}
	if p, ok := c.programs[key.String()]; ok {
		return p
	}
	p := &program{text: text, types: typesOf}
	c.programs[key.String()] = p
	env := make(types.Map, len(uses))
	for k, u := range uses {
		p.names = append(p.names, u.name)
		env[u.name] = exprType(typesOf[k])
	}
	prog, err := expr.Compile(text, expr.Env(env))
	if err != nil {
		p.err = toExprError(err)
		return p
	}
	p.vm = prog
	root := prog.Node()
	p.result = staticType(root)
	if p.result == tAny {
		if rt := root.Type(); rt != nil && rt.Kind() != reflect.Interface {
			p.err = &exprError{line: 1, msg: fmt.Sprintf("expression: yields %s; want a bool, number or string", rt)}
			return p
		}
	}
	p.fast, p.isFast = buildFast(root, func(name string) (int, envType, bool) {
		k, ok := slices.BinarySearch(p.names, name)
		if !ok {
			return 0, tAny, false
		}
		return k, p.types[k], true
	})
	return p
}

func exprType(t envType) types.Type {
	switch t {
	case tBool:
		return types.Bool
	case tInt:
		return types.Int
	case tFloat:
		return types.Float64
	case tString:
		return types.String
	}
	return types.Any
}

func toExprError(err error) *exprError {
	var fe *file.Error
	if errors.As(err, &fe) {
		return &exprError{line: fe.Line, col: fe.Column, msg: "expression: " + fe.Message}
	}
	return &exprError{line: 1, msg: "expression: " + err.Error()}
}

// scan parses text once and lists the names it uses.
func (c *compiler) scan(text string) *scanned {
	if sc, ok := c.scans[text]; ok {
		return sc
	}
	sc := &scanned{}
	c.scans[text] = sc
	tree, err := parser.Parse(text)
	if err != nil {
		sc.err = toExprError(err)
		return sc
	}
	v := &nameVisitor{declared: make(map[string]bool)}
	ast.Walk(&tree.Node, v)
	seen := make(map[string]bool)
	for _, id := range v.idents {
		if seen[id.Value] || v.declared[id.Value] {
			continue
		}
		seen[id.Value] = true
		line, col := lineCol(text, id.Location().From)
		sc.names = append(sc.names, nameUse{name: id.Value, line: line, col: col})
	}
	return sc
}

type nameVisitor struct {
	idents   []*ast.IdentifierNode
	declared map[string]bool // let-bound names are not environment names
}

func (v *nameVisitor) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		v.idents = append(v.idents, n)
	case *ast.VariableDeclaratorNode:
		v.declared[n.Name] = true
	}
}

// lineCol turns a rune offset into a 1-based line and 0-based rune column.
func lineCol(text string, offset int) (line, col int) {
	line = 1
	n := 0
	for _, r := range text {
		if n == offset {
			break
		}
		n++
		if r == '\n' {
			line++
			col = 0
		} else {
			col++
		}
	}
	return line, col
}

// exprPos maps a position inside an expression onto the model file. The
// first line starts at ExprPos; later lines (block scalars) are assumed to be
// indented like the first.
func exprPos(t *model.Tag, line, col int) model.Pos {
	p := t.ExprPos
	if line > 1 {
		p.Line += line - 1
	}
	if p.Col > 0 {
		p.Col += col
	}
	return p
}

func (c *compiler) exprDiag(t *model.Tag, e *exprError) {
	c.ds.Add(exprPos(t, e.line, e.col), "%s", e.msg)
}

func (c *compiler) diagAt(t *model.Tag, use nameUse, format string, args ...any) {
	c.ds.Add(exprPos(t, use.line, use.col), format, args...)
}
