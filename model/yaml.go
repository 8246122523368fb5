package model

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// This file is the strict YAML layer shared by the model loader and the
// gateway config: ParseYAML turns bytes into a node tree, DecodeNode fills Go
// structs from it and reports every problem with its position instead of
// stopping at the first one.

// maxExpandedNodes bounds the size of a document after its aliases are
// expanded, so a few lines of nested anchors ("billion laughs") cannot make
// the decoder walk billions of nodes.
const maxExpandedNodes = 1_000_000

// ParseYAML parses one YAML document. It returns the document's root content
// node (a mapping, sequence or scalar), or nil with no diagnostics when the
// file is empty or holds only comments or a bare null. Problems are reported
// at file:line(:col): syntax errors (with the line yaml.v3 reports, or line 1
// when it gives none), a second document in the same file, aliases that refer
// to themselves, and aliases that expand to an unreasonably large tree.
//
// The returned tree is what DecodeNode expects. Alias nodes are left in place
// (DecodeNode follows them); code walking the tree itself should use
// Resolve on every node it looks at.
func ParseYAML(file string, data []byte) (node *yaml.Node, diags Diagnostics) {
	defer func() {
		// yaml.v3 has panicked on hostile input in the past; a model file
		// must never take the gateway down.
		if r := recover(); r != nil {
			node = nil
			diags = Diagnostics{{Pos: Pos{File: file, Line: 1}, Msg: fmt.Sprintf("YAML parser failed: %v", r)}}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		pos, msg := syntaxError(file, data, err)
		diags.Add(pos, "%s", msg)
		return nil, diags
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		diags.Add(nodePos(file, &next), "a second YAML document (---) is not allowed here; put it in its own file")
		return nil, diags
	case !errors.Is(err, io.EOF):
		pos, msg := syntaxError(file, data, err)
		diags.Add(pos, "%s", msg)
		return nil, diags
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil
	}
	if !checkAliases(file, root, &diags) {
		return nil, diags
	}
	return root, diags
}

var lineRe = regexp.MustCompile(`^line (\d+): `)

// parserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner). For these it reports the 0-based line of the enclosing construct,
// so one is added; scanner errors carry 1-based lines already.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

// syntaxError converts a yaml.v3 error into a position and message. yaml.v3
// leaves the line out for problems on its first (0-based) line, and gives
// none at all for encoding problems, which are then located in data.
func syntaxError(file string, data []byte, err error) (Pos, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	pos := Pos{File: file, Line: 1}
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		msg = msg[len(m[0]):]
		if n, convErr := strconv.Atoi(m[1]); convErr == nil && n > 0 {
			pos.Line = n
		}
		if slices.Contains(parserProblems, msg) {
			pos.Line++
		}
	} else if slices.Contains(parserProblems, msg) {
		pos.Line = 1
	} else if line, col, ok := badCharPos(data); ok {
		pos.Line, pos.Col = line, col
	}
	return pos, "YAML syntax error: " + msg
}

// badCharPos finds the first byte YAML does not accept in a document:
// invalid UTF-8 and control characters other than tab and line breaks.
func badCharPos(data []byte) (line, col int, found bool) {
	line, col = 1, 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		bad := r == utf8.RuneError && size <= 1 ||
			r < 0x20 && r != '\t' && r != '\n' && r != '\r' ||
			r == 0x7f || r >= 0x80 && r < 0xa0 && r != 0x85 || r == 0xfffe || r == 0xffff
		if bad {
			return line, col, true
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i += size
	}
	return 0, 0, false
}

// checkAliases walks the tree counting nodes as if every alias were expanded
// (memoized per anchored node), reporting self-referencing anchors and
// documents that would expand beyond maxExpandedNodes.
func checkAliases(file string, root *yaml.Node, diags *Diagnostics) bool {
	const inProgress = -1
	size := map[*yaml.Node]int{}
	ok, reported := true, false
	var count func(n *yaml.Node) int
	count = func(n *yaml.Node) int {
		if !ok {
			return 0
		}
		if s, seen := size[n]; seen {
			if s == inProgress {
				ok = false
				return 0
			}
			return s
		}
		size[n] = inProgress
		total := 1
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil {
				total = 1
			} else {
				total += count(n.Alias)
				if !ok {
					if !reported {
						reported = true
						diags.Add(nodePos(file, n), "alias *%s refers to the node it is part of", n.Value)
					}
					return 0
				}
			}
		}
		for _, c := range n.Content {
			total += count(c)
			if total > maxExpandedNodes {
				total = maxExpandedNodes + 1
			}
		}
		size[n] = total
		return total
	}
	total := count(root)
	if ok && total > maxExpandedNodes {
		diags.Add(nodePos(file, root), "aliases expand to more than %d nodes", maxExpandedNodes)
		ok = false
	}
	return ok
}

// Resolve follows alias nodes (*name) to the node they stand for. It returns
// n itself for any other node, and nil for nil.
func Resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// nodePos is the position of n in file.
func nodePos(file string, n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: file}
	}
	return Pos{File: file, Line: n.Line, Col: n.Column}
}

// NodePos returns the position of node n in file (zero Line for a nil node).
func NodePos(file string, n *yaml.Node) Pos { return nodePos(file, n) }

// At holds a decoded value together with the position of its YAML node, for
// checks done after decoding that must still point at the right line:
//
//	Poll model.At[time.Duration] `yaml:"poll"`
//
// Pos.Line is 0 when the key was absent; see Present.
type At[T any] struct {
	V   T
	Pos Pos

	failed bool
}

// Present reports whether the key was given in the file (even as null).
func (a At[T]) Present() bool { return a.Pos.Line > 0 || a.Pos.Col > 0 }

// Failed reports whether decoding the value reported a problem, so that
// checks done after decoding can skip it instead of piling a second message
// onto the same mistake.
func (a At[T]) Failed() bool { return a.failed }

// Valid reports whether the key was given and decoded without problems.
func (a At[T]) Valid() bool { return a.Present() && !a.failed }

// KV is one entry of an OrderedMap.
type KV[T any] struct {
	Key      string
	KeyPos   Pos // position of the key
	Value    T
	ValuePos Pos // position of the value
}

// OrderedMap decodes a YAML mapping with string keys into its entries in
// document order, keeping the position of every key and value. Duplicate
// keys are reported; the first one wins.
type OrderedMap[T any] []KV[T]

// Get returns the value for key and whether it is present.
func (m OrderedMap[T]) Get(key string) (T, bool) {
	for i := range m {
		if m[i].Key == key {
			return m[i].Value, true
		}
	}
	var zero T
	return zero, false
}

// Keys returns the keys in document order.
func (m OrderedMap[T]) Keys() []string {
	keys := make([]string, len(m))
	for i := range m {
		keys[i] = m[i].Key
	}
	return keys
}

// NodeUnmarshaler is implemented by types that decode themselves from a YAML
// node, reporting problems into diags (positions via NodePos). DecodeNode
// calls it with aliases already resolved; n is never nil.
type NodeUnmarshaler interface {
	UnmarshalYAMLNode(file string, n *yaml.Node, diags *Diagnostics)
}

// positioned is implemented by At and OrderedMap: generic wrappers that need
// the decoder's state.
type positioned interface {
	decodeWith(d *decoder, n *yaml.Node)
}

func (a *At[T]) decodeWith(d *decoder, n *yaml.Node) {
	a.Pos = d.pos(n)
	before := len(*d.diags)
	d.decode(n, reflect.ValueOf(&a.V).Elem())
	a.failed = len(*d.diags) > before
}

func (m *OrderedMap[T]) decodeWith(d *decoder, n *yaml.Node) {
	*m = nil
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.typeErr(n, "a mapping")
		return
	}
	for _, p := range d.pairs(n) {
		var kv KV[T]
		kv.Key = Resolve(p.key).Value
		kv.KeyPos = d.pos(p.key)
		kv.ValuePos = d.pos(Resolve(p.value))
		d.decode(p.value, reflect.ValueOf(&kv.Value).Elem())
		*m = append(*m, kv)
	}
}

// DecodeNode decodes node into out, which must be a non-nil pointer, and
// appends every problem found to diags instead of stopping at the first one.
// node is normally the result of ParseYAML; a nil node decodes like an empty
// mapping (so required keys are still reported, at the file).
//
// Supported targets:
//   - structs from mappings: keys match `yaml:"name"` tags (",omitempty" is
//     ignored, ",inline" merges an embedded struct's keys; untagged exported
//     fields use the lower-cased field name; `yaml:"-"` skips a field).
//     Unknown keys are reported with a suggestion ("unknown key "spede" (did
//     you mean "speed"?)"), duplicate keys too (the first one wins). A field
//     tagged `unsgate:"required"` must be present and not null, else
//     "missing required key" is reported at the mapping. A field of type Pos
//     tagged `yaml:"-"` receives the position of the struct's own mapping
//     (it stays zero when the value was not a mapping, which is reported).
//     A null value decodes a struct like an empty mapping.
//   - pointers (allocated when the value is not null), slices from
//     sequences, maps from mappings (keys decoded like any scalar target).
//   - string (any non-null scalar, as written), bool (true/false), signed and
//     unsigned integers of every size (range-checked), float32/64 (integers
//     accepted), time.Duration (Go syntax: 500ms, 1m30s; 0 allowed), Value
//     (typed scalar: int, float, bool, string, null), and any (bool, int64,
//     uint64, float64, string, []any, map[string]any).
//   - yaml.Node and *yaml.Node receive the raw node, for the caller to walk.
//   - At[T] decodes T and records the value's position and whether decoding
//     it failed; OrderedMap[T] keeps
//     mapping entries in document order with key and value positions.
//   - types implementing NodeUnmarshaler, or encoding.TextUnmarshaler (for
//     scalars), decode themselves.
//
// Null leaves scalar targets at their zero value. Merge keys (<<: *base) and
// aliases are followed.
func DecodeNode(file string, node *yaml.Node, out any, diags *Diagnostics) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("model.DecodeNode: out must be a non-nil pointer, got %T", out))
	}
	d := &decoder{file: file, diags: diags}
	if node == nil {
		node = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	} else if node.Kind == yaml.DocumentNode {
		if len(node.Content) == 0 {
			node = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		} else {
			node = node.Content[0]
		}
	}
	d.decode(node, v.Elem())
}

type decoder struct {
	file  string
	diags *Diagnostics
}

func (d *decoder) pos(n *yaml.Node) Pos { return nodePos(d.file, n) }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.diags.Add(d.pos(n), format, args...)
}

// typeErr reports that n is not what the target needs.
func (d *decoder) typeErr(n *yaml.Node, want string) {
	d.errorf(n, "expected %s, got %s", want, Describe(n))
}

// Describe names a node for error messages: a scalar's text (quoted,
// shortened), "a mapping", "a list" or "null".
func Describe(n *yaml.Node) string {
	n = Resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		s := n.Value
		if utf8.RuneCountInString(s) > 40 {
			r := []rune(s)
			s = string(r[:37]) + "..."
		}
		q := strconv.Quote(s)
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && looksNumeric(n.Value) {
			return "the quoted string " + q
		}
		return q
	}
	return "an unexpected node"
}

func looksNumeric(s string) bool {
	if s == "" {
		return false
	}
	_, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	return err == nil || s == "true" || s == "false"
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

var (
	nodeType            = reflect.TypeFor[yaml.Node]()
	nodePtrType         = reflect.TypeFor[*yaml.Node]()
	posType             = reflect.TypeFor[Pos]()
	durationType        = reflect.TypeFor[time.Duration]()
	valueType           = reflect.TypeFor[Value]()
	positionedType      = reflect.TypeFor[positioned]()
	nodeUnmarshalerType = reflect.TypeFor[NodeUnmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decode fills v (settable) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value) {
	raw := n
	n = Resolve(n)
	if n == nil {
		return
	}
	t := v.Type()
	switch t {
	case nodeType:
		v.Set(reflect.ValueOf(*raw))
		return
	case nodePtrType:
		v.Set(reflect.ValueOf(raw))
		return
	case durationType:
		d.decodeDuration(n, v)
		return
	case valueType:
		if val, ok := d.scalarValue(n); ok {
			v.Set(reflect.ValueOf(val))
		}
		return
	}
	if reflect.PointerTo(t).Implements(positionedType) {
		v.Addr().Interface().(positioned).decodeWith(d, n)
		return
	}
	if t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(nodeUnmarshalerType) {
		v.Addr().Interface().(NodeUnmarshaler).UnmarshalYAMLNode(d.file, n, d.diags)
		return
	}
	if t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshalerType) {
		if isNull(n) {
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.typeErr(n, "a single value")
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.errorf(n, "%v", err)
		}
		return
	}

	switch t.Kind() {
	case reflect.Pointer:
		// A key written without a value turns a section on with its
		// defaults ("sparkplug:" as "sparkplug: {}"); for other pointers
		// it means absent.
		if isNull(n) && t.Elem().Kind() != reflect.Struct {
			v.SetZero()
			return
		}
		p := reflect.New(t.Elem())
		d.decode(n, p.Elem())
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v)
	case reflect.Slice:
		d.decodeSlice(n, v)
	case reflect.Map:
		d.decodeMap(n, v)
	case reflect.Interface:
		if t.NumMethod() != 0 {
			panic(fmt.Sprintf("model.DecodeNode: cannot decode into interface %s", t))
		}
		if x := d.natural(n); x != nil {
			v.Set(reflect.ValueOf(x))
		}
	case reflect.String:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.typeErr(n, "a text value")
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if isNull(n) {
			return
		}
		if b, ok := parseBool(n); ok {
			v.SetBool(b)
			return
		}
		d.typeErr(n, "true or false")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if isNull(n) {
			return
		}
		i, ok := d.integer(n)
		if !ok {
			return
		}
		if i.neg && i.u > 1<<63 || !i.neg && i.u > math.MaxInt64 || v.OverflowInt(i.int64()) {
			lo, hi := intRange(t)
			d.errorf(n, "number %s is out of range (%d..%d)", n.Value, lo, hi)
			return
		}
		v.SetInt(i.int64())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if isNull(n) {
			return
		}
		i, ok := d.integer(n)
		if !ok {
			return
		}
		if i.neg && i.u != 0 || v.OverflowUint(i.u) {
			d.errorf(n, "number %s is out of range (0..%d)", n.Value, uint64(1)<<(t.Bits()-1)*2-1)
			return
		}
		v.SetUint(i.u)
	case reflect.Float32, reflect.Float64:
		if isNull(n) {
			return
		}
		f, ok := parseFloat(n)
		if !ok {
			d.typeErr(n, "a number")
			return
		}
		if t.Kind() == reflect.Float32 && !math.IsInf(f, 0) && math.Abs(f) > math.MaxFloat32 {
			d.errorf(n, "number %s is out of range for a 32-bit float", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		panic(fmt.Sprintf("model.DecodeNode: unsupported target type %s", t))
	}
}

func intRange(t reflect.Type) (int64, int64) {
	bits := t.Bits()
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

func (d *decoder) decodeDuration(n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	if n.Kind == yaml.ScalarNode {
		if dur, err := time.ParseDuration(n.Value); err == nil {
			v.SetInt(int64(dur))
			return
		}
	}
	d.typeErr(n, "a duration like 500ms or 1m30s")
}

// pair is one key/value entry of a mapping after merge keys are expanded.
type pair struct{ key, value *yaml.Node }

// pairs lists n's entries in document order, expanding merge keys (<<) in
// place (explicit keys win over merged ones) and reporting non-scalar keys
// and duplicate keys (the first occurrence wins).
func (d *decoder) pairs(n *yaml.Node) []pair {
	explicit := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := Resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errorf(n.Content[i], "mapping keys must be plain values, got %s", Describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			continue
		}
		if first, dup := explicit[k.Value]; dup {
			d.errorf(n.Content[i], "duplicate key %q (first at line %d)", k.Value, first.Line)
			continue
		}
		explicit[k.Value] = n.Content[i]
	}
	out := make([]pair, 0, len(n.Content)/2)
	seen := make(map[string]bool, len(explicit))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := Resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			continue
		}
		if k.ShortTag() == "!!merge" {
			for _, p := range d.mergeSources(n.Content[i+1]) {
				mk := Resolve(p.key)
				if _, ok := explicit[mk.Value]; ok || seen[mk.Value] {
					continue
				}
				seen[mk.Value] = true
				out = append(out, p)
			}
			continue
		}
		if explicit[k.Value] != n.Content[i] || seen[k.Value] {
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{n.Content[i], n.Content[i+1]})
	}
	return out
}

// mergeSources returns the entries a merge key's value brings in: one
// mapping, or a list of mappings where earlier ones win.
func (d *decoder) mergeSources(v *yaml.Node) []pair {
	v = Resolve(v)
	switch {
	case v == nil:
		return nil
	case v.Kind == yaml.MappingNode:
		return d.pairs(v)
	case v.Kind == yaml.SequenceNode:
		var out []pair
		for _, item := range v.Content {
			item = Resolve(item)
			if item == nil || item.Kind != yaml.MappingNode {
				d.typeErr(item, "a mapping to merge")
				continue
			}
			out = append(out, d.pairs(item)...)
		}
		return out
	}
	d.typeErr(v, "a mapping (or list of mappings) to merge")
	return nil
}

type fieldInfo struct {
	name     string
	index    []int
	required bool
}

type structInfo struct {
	fields []fieldInfo
	byName map[string]int
	names  []string // for suggestions
	posIdx [][]int  // Pos fields tagged "-": receive the mapping's position
}

var structCache sync.Map // reflect.Type -> *structInfo

func getStructInfo(t reflect.Type) *structInfo {
	if si, ok := structCache.Load(t); ok {
		return si.(*structInfo)
	}
	si := &structInfo{byName: map[string]int{}}
	collectFields(t, nil, si)
	structCache.Store(t, si)
	return si
}

func collectFields(t reflect.Type, prefix []int, si *structInfo) {
	for i := range t.NumField() {
		f := t.Field(i)
		index := append(append([]int(nil), prefix...), i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if tag == "-" {
			if f.Type == posType {
				si.posIdx = append(si.posIdx, index)
			}
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			if f.Type.Kind() != reflect.Struct {
				panic(fmt.Sprintf("model.DecodeNode: inline field %s of %s is not a struct", f.Name, t))
			}
			collectFields(f.Type, index, si)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if _, dup := si.byName[name]; dup {
			panic(fmt.Sprintf("model.DecodeNode: key %q declared twice in %s", name, t))
		}
		si.byName[name] = len(si.fields)
		si.names = append(si.names, name)
		si.fields = append(si.fields, fieldInfo{
			name:     name,
			index:    index,
			required: f.Tag.Get("unsgate") == "required",
		})
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value) {
	si := getStructInfo(v.Type())
	var ps []pair
	switch {
	case isNull(n):
	case n.Kind == yaml.MappingNode:
		ps = d.pairs(n)
	default:
		d.typeErr(n, "a mapping")
		return
	}
	for _, idx := range si.posIdx {
		v.FieldByIndex(idx).Set(reflect.ValueOf(d.pos(n)))
	}
	var given []bool
	if len(si.fields) > 0 {
		given = make([]bool, len(si.fields))
	}
	for _, p := range ps {
		key := Resolve(p.key).Value
		fi, ok := si.byName[key]
		if !ok {
			d.errorf(p.key, "unknown key %q%s", key, didYouMean(key, si.names))
			continue
		}
		f := si.fields[fi]
		if f.required && isNull(Resolve(p.value)) {
			d.errorf(p.value, "key %q needs a value", key)
		}
		given[fi] = true
		d.decode(p.value, v.FieldByIndex(f.index))
	}
	for i, f := range si.fields {
		if f.required && !given[i] {
			d.errorf(n, "missing required key %q", f.name)
		}
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.typeErr(n, "a list")
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i))
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.MappingNode {
		d.typeErr(n, "a mapping")
		return
	}
	t := v.Type()
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	firstLine := map[any]int{}
	for _, p := range d.pairs(n) {
		before := len(*d.diags)
		k := reflect.New(t.Key()).Elem()
		d.decode(p.key, k)
		if len(*d.diags) != before {
			continue
		}
		if k.Comparable() {
			if line, dup := firstLine[k.Interface()]; dup {
				d.errorf(p.key, "duplicate key %q (first at line %d)", Resolve(p.key).Value, line)
				continue
			}
			firstLine[k.Interface()] = Resolve(p.key).Line
		}
		e := reflect.New(t.Elem()).Elem()
		d.decode(p.value, e)
		m.SetMapIndex(k, e)
	}
	v.Set(m)
}

// natural decodes n into plain Go values for `any` targets.
func (d *decoder) natural(n *yaml.Node) any {
	n = Resolve(n)
	if n == nil {
		return nil
	}
	switch n.Kind {
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, item := range n.Content {
			out = append(out, d.natural(item))
		}
		return out
	case yaml.MappingNode:
		out := map[string]any{}
		for _, p := range d.pairs(n) {
			out[Resolve(p.key).Value] = d.natural(p.value)
		}
		return out
	}
	val, _ := d.scalarValue(n)
	return val.Interface()
}

// scalarValue converts a scalar to a typed Value following the YAML tag:
// integers to Int (Uint above MaxInt64), floats to Float, booleans, null, and
// everything else to String.
func (d *decoder) scalarValue(n *yaml.Node) (Value, bool) {
	if n.Kind != yaml.ScalarNode {
		d.typeErr(n, "a single value")
		return Null(), false
	}
	switch n.ShortTag() {
	case "!!null":
		return Null(), true
	case "!!bool":
		if b, ok := parseBool(n); ok {
			return BoolValue(b), true
		}
		d.typeErr(n, "true or false")
		return Null(), false
	case "!!int":
		i, ok := d.integer(n)
		if !ok {
			return Null(), false
		}
		switch {
		case !i.neg && i.u <= math.MaxInt64, i.neg && i.u <= 1<<63:
			return IntValue(i.int64()), true
		case !i.neg:
			return UintValue(i.u), true
		}
		d.errorf(n, "number %s is out of range", n.Value)
		return Null(), false
	case "!!float":
		if f, ok := parseFloat(n); ok {
			return FloatValue(f), true
		}
		d.typeErr(n, "a number")
		return Null(), false
	}
	return StringValue(n.Value), true
}

// yamlInt is an integer as magnitude and sign, so both int64 and uint64
// ranges fit.
type yamlInt struct {
	u   uint64
	neg bool
}

func (i yamlInt) int64() int64 {
	if i.neg {
		return -int64(i.u-1) - 1
	}
	return int64(i.u)
}

// integer parses an integer scalar the way YAML writes them: decimal, 0x,
// 0o, 0b, optional sign and _ separators. Quoted text is not a number.
func (d *decoder) integer(n *yaml.Node) (yamlInt, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && isDigits(strings.TrimLeft(n.Value, "+-")) {
			// YAML resolves integers too long for 64 bits as floats.
			d.errorf(n, "number %s is out of range", n.Value)
		} else {
			d.typeErr(n, "an integer")
		}
		return yamlInt{}, false
	}
	s := strings.ReplaceAll(n.Value, "_", "")
	var i yamlInt
	switch {
	case strings.HasPrefix(s, "-"):
		i.neg = true
		s = s[1:]
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	}
	u, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			d.errorf(n, "number %s is out of range", n.Value)
		} else {
			d.typeErr(n, "an integer")
		}
		return yamlInt{}, false
	}
	i.u = u
	if u == 0 {
		i.neg = false
	}
	return i, true
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func parseBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		return false, false
	}
	switch n.Value {
	case "true", "True", "TRUE":
		return true, true
	case "false", "False", "FALSE":
		return false, true
	}
	return false, false
}

// parseFloat accepts YAML integers and floats, including .inf and .nan.
func parseFloat(n *yaml.Node) (float64, bool) {
	if n.Kind != yaml.ScalarNode {
		return 0, false
	}
	switch n.ShortTag() {
	case "!!int":
		var d decoder
		d.diags = new(Diagnostics)
		i, ok := d.integer(n)
		if !ok {
			return 0, false
		}
		f := float64(i.u)
		if i.neg {
			f = -f
		}
		return f, true
	case "!!float":
	default:
		return 0, false
	}
	s := strings.ReplaceAll(n.Value, "_", "")
	switch strings.ToLower(strings.TrimLeft(s, "+-")) {
	case ".inf":
		if strings.HasPrefix(s, "-") {
			return math.Inf(-1), true
		}
		return math.Inf(1), true
	case ".nan":
		return math.NaN(), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// didYouMean formats a suggestion suffix for an error message, or "".
func didYouMean(word string, candidates []string) string {
	if s := Suggest(word, candidates); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

// Suggest returns the candidate closest to word, for "did you mean"
// messages: the one with the smallest edit distance (case-insensitive,
// adjacent swaps count once) if that is at most 2 and less than half of
// word's length, or else one that word is a prefix of, or that is a prefix
// of word. Ties go to the alphabetically first candidate. It returns "" when
// nothing is close.
func Suggest(word string, candidates []string) string {
	lw := strings.ToLower(word)
	best, bestDist := "", math.MaxInt
	maxDist := min(2, (utf8.RuneCountInString(word)+1)/2)
	for _, c := range candidates {
		if c == "" {
			continue
		}
		dist := editDistance(lw, strings.ToLower(c))
		if dist <= maxDist && (dist < bestDist || dist == bestDist && c < best) {
			best, bestDist = c, dist
		}
	}
	if best != "" {
		return best
	}
	if len(lw) < 2 {
		return ""
	}
	for _, c := range candidates {
		lc := strings.ToLower(c)
		if len(lc) >= 2 && (strings.HasPrefix(lc, lw) || strings.HasPrefix(lw, lc)) && (best == "" || c < best) {
			best = c
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		// Long words are never typos of each other worth suggesting.
		if a == b {
			return 0
		}
		return math.MaxInt / 2
	}
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
