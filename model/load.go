package model

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultLevels are the ISA-95 hierarchy levels a model has unless a file
// sets `levels`.
var DefaultLevels = []string{"enterprise", "site", "area", "line", "cell"}

// File is one model file's name (used in diagnostics) and content.
type File struct {
	Name string
	Data []byte
}

// YAMLFiles lists the *.yaml and *.yml files below dir, recursively, in name
// order, skipping hidden directories (such as .git).
func YAMLFiles(dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name != dir && strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(name); ext == ".yaml" || ext == ".yml" {
			names = append(names, name)
		}
		return nil
	})
	return names, err
}

// Load reads model files and directories and validates them together as one
// model. Directories are walked recursively for *.yaml and *.yml files (in
// name order, skipping hidden directories); a directory without any is an
// error. Diagnostics name the files by the paths as given, e.g.
// models/line1.yaml for Load("models").
//
// The error is a Diagnostics holding every problem found in the files (see
// LoadFiles), or a wrapped I/O error when a path cannot be read.
func Load(paths ...string) (*Model, error) {
	if len(paths) == 0 {
		return nil, errors.New("load model: no model files or directories given")
	}
	var (
		files []File
		diags Diagnostics
		seen  = map[string]bool{}
	)
	add := func(name string) error {
		if seen[filepath.Clean(name)] {
			return nil
		}
		seen[filepath.Clean(name)] = true
		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("load model: %w", err)
		}
		files = append(files, File{Name: name, Data: data})
		return nil
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("load model: %w", err)
		}
		if !info.IsDir() {
			if err := add(p); err != nil {
				return nil, err
			}
			continue
		}
		names, err := YAMLFiles(p)
		if err != nil {
			return nil, fmt.Errorf("load model: %w", err)
		}
		for _, name := range names {
			if err := add(name); err != nil {
				return nil, err
			}
		}
		found := len(names)
		if found == 0 {
			diags.Add(Pos{File: p}, "no model files (*.yaml, *.yml) in this directory")
		}
	}
	m, err := LoadFiles(files)
	if len(diags) > 0 {
		var more Diagnostics
		if errors.As(err, &more) {
			diags = append(diags, more...)
		}
		return m, diags.Err()
	}
	return m, err
}

// LoadFiles validates the given files as one model and resolves every asset
// instance. On any problem it returns a Diagnostics error listing all of them
// (file:line:col: message, sorted) together with the partial Model: the
// assets that could be resolved, where tags whose address is wrong carry a
// placeholder Address of no protocol. The partial model exists so that
// expressions can still be checked in the same pass (unsgate validate); it
// must never be run. Checks not done here
// because they need the compiled expressions or the gateway config:
// expression syntax and types, unknown tag references and cycles (harmonize),
// unknown source ids (gateway; see Asset.SourcePos).
func LoadFiles(files []File) (*Model, error) {
	l := &loader{types: map[string]*typeDef{}, assets: map[string]Pos{}, topics: map[string]Pos{}}
	docs := make([]*fileDoc, len(files))
	names := make([]string, len(files))
	l.data = make(map[string][]byte, len(files))
	for i, f := range files {
		names[i] = f.Name
		l.data[f.Name] = f.Data
		root, ds := ParseYAML(f.Name, f.Data)
		l.diags = append(l.diags, ds...)
		if root == nil {
			continue
		}
		doc := &fileDoc{}
		DecodeNode(f.Name, root, doc, &l.diags)
		docs[i] = doc
	}
	l.levels = DefaultLevels
	for _, doc := range docs {
		if doc != nil && doc.Levels.Valid() {
			l.checkLevels(doc)
		}
	}
	for _, doc := range docs {
		if doc != nil {
			l.addTypes(doc)
		}
	}
	m := &Model{Files: names, Levels: slices.Clone(l.levels)}
	for _, doc := range docs {
		if doc != nil {
			m.Assets = append(m.Assets, l.addAssets(doc)...)
		}
	}
	slices.SortFunc(m.Assets, func(a, b *Asset) int { return cmp.Compare(a.Path, b.Path) })
	if err := l.diags.Err(); err != nil {
		return partial(m), err
	}
	return m, nil
}

// The file schema as decoded; see docs/MODELS.md.
type fileDoc struct {
	Levels At[[]string]         `yaml:"levels"`
	Base   At[string]           `yaml:"base"`
	Types  OrderedMap[typeDoc]  `yaml:"types"`
	Assets OrderedMap[assetDoc] `yaml:"assets"`
}

type typeDoc struct {
	Description string             `yaml:"description"`
	Params      OrderedMap[Value]  `yaml:"params"`
	Tags        OrderedMap[tagDoc] `yaml:"tags" unsgate:"required"`
}

type tagDoc struct {
	Pos         Pos                `yaml:"-"` // zero when the tag's value is not a mapping
	Address     At[string]         `yaml:"address"`
	Type        At[string]         `yaml:"type"`
	Length      At[int]            `yaml:"length"`
	Order       At[string]         `yaml:"order"`
	Expr        exprDoc            `yaml:"expr"`
	Unit        string             `yaml:"unit"`
	Description string             `yaml:"description"`
	Deadband    At[Value]          `yaml:"deadband"`
	Enum        OrderedMap[string] `yaml:"enum"`
	OnChange    *bool              `yaml:"on_change"`
	Heartbeat   At[time.Duration]  `yaml:"heartbeat"`
	Datatype    At[string]         `yaml:"datatype"`
	Poll        At[time.Duration]  `yaml:"poll"`
	// OPC UA monitoring options.
	Sampling     At[time.Duration] `yaml:"sampling"`
	QueueSize    At[int]           `yaml:"queue_size"`
	DataDeadband At[float64]       `yaml:"data_change_deadband"`
}

type assetDoc struct {
	Type        At[string]        `yaml:"type" unsgate:"required"`
	Source      At[string]        `yaml:"source"`
	UnitID      At[int]           `yaml:"unit_id"`
	Offset      At[int]           `yaml:"offset"`
	Poll        At[time.Duration] `yaml:"poll"`
	Description string            `yaml:"description"`
	Params      OrderedMap[Value] `yaml:"params"`
}

// exprDoc is an expression and the position of its first character, which
// harmonize adds its own column offsets to when it reports compile errors.
type exprDoc struct {
	Text   string
	Pos    Pos
	Set    bool
	Failed bool
	Block  bool // literal (|) or folded (>) scalar: Pos is the indicator until the loader fixes it
}

func (e *exprDoc) UnmarshalYAMLNode(file string, n *yaml.Node, diags *Diagnostics) {
	e.Set = true
	e.Pos = NodePos(file, n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode {
		diags.Add(e.Pos, "expected an expression, got %s", Describe(n))
		e.Failed = true
		return
	}
	e.Text = n.Value
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		e.Pos.Col++ // skip the quote
	}
	e.Block = n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0
}

// blockStart returns the position of the first content character of a block
// scalar whose indicator (| or >) is at pos: the first non-blank line after
// the indicator, at its indentation. yaml.v3 only reports the indicator.
func blockStart(data []byte, pos Pos) Pos {
	lines := bytes.Split(data, []byte("\n"))
	for i := pos.Line; i < len(lines); i++ { // lines[pos.Line] is the line after the indicator
		trimmed := bytes.TrimLeft(lines[i], " ")
		if len(bytes.TrimSpace(trimmed)) == 0 {
			continue
		}
		return Pos{File: pos.File, Line: i + 1, Col: len(lines[i]) - len(trimmed) + 1}
	}
	return pos
}

type loader struct {
	data      map[string][]byte // file contents by name, for block scalar positions
	diags     Diagnostics
	levels    []string
	levelsDoc *fileDoc // first file that set levels
	types     map[string]*typeDef
	typeNames []string
	assets    map[string]Pos // asset path -> where first defined
	topics    map[string]Pos // topic -> asset that first defined it
}

type typeDef struct {
	name         string
	pos          Pos
	params       OrderedMap[Value]
	tags         []*tagDef
	hasAddressed bool
}

type tagDef struct {
	doc      *tagDoc
	template Tag // everything but Topic and Address
	addrOpt  AddressOptions
	addrOK   bool // the address parsed without offset; instance errors are then offset errors
}

func (l *loader) errorf(pos Pos, format string, args ...any) { l.diags.Add(pos, format, args...) }

// isIdent reports whether s is a letter or _ followed by letters, digits and _.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func (l *loader) checkLevels(doc *fileDoc) {
	levels := doc.Levels.V
	if len(levels) == 0 {
		l.errorf(doc.Levels.Pos, "levels must name at least one level")
		return
	}
	ok := true
	for i, name := range levels {
		if !isIdent(name) {
			l.errorf(doc.Levels.Pos, "level name %q is not an identifier (letters, digits and _, not starting with a digit)", name)
			ok = false
		}
		if slices.Contains(levels[:i], name) {
			l.errorf(doc.Levels.Pos, "level name %q appears twice", name)
			ok = false
		}
	}
	if l.levelsDoc == nil {
		l.levelsDoc = doc
		if ok {
			l.levels = levels
		}
		return
	}
	if !slices.Equal(levels, l.levelsDoc.Levels.V) {
		l.errorf(doc.Levels.Pos, "levels [%s] disagree with [%s] set at %s; all files of a model share one hierarchy",
			strings.Join(levels, ", "), strings.Join(l.levelsDoc.Levels.V, ", "), l.levelsDoc.Levels.Pos)
	}
}

// addTypes registers and checks the file's asset types.
func (l *loader) addTypes(doc *fileDoc) {
	for i := range doc.Types {
		kv := &doc.Types[i]
		name := kv.Key
		if !isIdent(name) {
			l.errorf(kv.KeyPos, "type name %q is not an identifier (letters, digits and _, not starting with a digit)", name)
		}
		if first, dup := l.types[name]; dup {
			l.errorf(kv.KeyPos, "duplicate type %q (first defined at %s)", name, first.pos)
			continue
		}
		t := &typeDef{name: name, pos: kv.KeyPos, params: kv.Value.Params}
		l.types[name] = t
		l.typeNames = append(l.typeNames, name)
		for _, p := range t.params {
			switch {
			case p.Key == "raw":
				l.errorf(p.KeyPos, "param name \"raw\" is reserved for the tag's raw value in expressions")
			case !isIdent(p.Key):
				l.errorf(p.KeyPos, "param name %q is not an identifier (letters, digits and _, not starting with a digit)", p.Key)
			}
		}
		for j := range kv.Value.Tags {
			td := l.checkTag(&kv.Value.Tags[j], t.params)
			t.tags = append(t.tags, td)
			if td.doc.Address.Present() {
				t.hasAddressed = true
			}
		}
	}
}

// checkTag validates one tag of a type and prepares its template.
func (l *loader) checkTag(kv *KV[tagDoc], params OrderedMap[Value]) *tagDef {
	doc := &kv.Value
	td := &tagDef{doc: doc}
	tag := &td.template
	tag.Name = kv.Key
	tag.Pos = kv.KeyPos
	tag.Unit = doc.Unit
	tag.Description = doc.Description
	tag.OnChange = doc.OnChange == nil || *doc.OnChange

	if err := ValidateTopic(kv.Key); err != nil {
		l.errorf(kv.KeyPos, "invalid tag name %q: %v", kv.Key, err)
	}
	if doc.Pos.Line == 0 {
		return td // not a mapping: already reported, nothing to check
	}

	switch {
	case doc.Address.Failed() || doc.Type.Failed() || doc.Length.Failed() || doc.Order.Failed() ||
		doc.Sampling.Failed() || doc.QueueSize.Failed() || doc.DataDeadband.Failed():
		// already reported; checking the address would only repeat it
	case doc.Address.Present():
		td.addrOpt = AddressOptions{Type: doc.Type.V, Length: doc.Length.V, Order: doc.Order.V,
			Sampling: doc.Sampling.V, QueueSize: doc.QueueSize.V, Deadband: doc.DataDeadband.V}
		text, complete, err := expandParams(doc.Address.V, func(name string) (Value, bool) {
			v, ok := params.Get(name)
			if v.Kind() == KindString && v.Str() == "" {
				v = Null() // an empty default only declares a text param
			}
			return v, ok
		})
		switch {
		case err != nil:
			l.errorf(doc.Address.Pos, "bad address %q: %v", doc.Address.V, err)
		case doc.Length.Valid() && doc.Length.V == 0:
			l.errorf(doc.Length.Pos, "length 0 is out of range (1..%d registers)", maxStringLength)
		case doc.Sampling.Valid() && doc.Sampling.V <= 0:
			l.errorf(doc.Sampling.Pos, "sampling must be more than 0, got %s", doc.Sampling.V)
		case !complete:
			// A param without a default: each instance's address is
			// checked with its own value.
			td.addrOK = true
		default:
			if _, err := ParseAddress(text, td.addrOpt); err != nil {
				l.addressError(err, doc, doc.Address.Pos, "")
			} else {
				td.addrOK = true
			}
		}
	default:
		for _, k := range []struct {
			name    string
			present bool
			pos     Pos
		}{
			{"type", doc.Type.Present(), doc.Type.Pos},
			{"length", doc.Length.Present(), doc.Length.Pos},
			{"order", doc.Order.Present(), doc.Order.Pos},
			{"poll", doc.Poll.Present(), doc.Poll.Pos},
			{"sampling", doc.Sampling.Present(), doc.Sampling.Pos},
			{"queue_size", doc.QueueSize.Present(), doc.QueueSize.Pos},
			{"data_change_deadband", doc.DataDeadband.Present(), doc.DataDeadband.Pos},
		} {
			if k.present {
				l.errorf(k.pos, "%s only applies to a tag with an address (tag %q has none)", k.name, kv.Key)
			}
		}
		if !doc.Expr.Set {
			l.errorf(kv.KeyPos, "tag %q needs an address, or an expr to derive it from other tags", kv.Key)
		}
	}
	if doc.Expr.Set && !doc.Expr.Failed {
		if strings.TrimSpace(doc.Expr.Text) == "" {
			l.errorf(doc.Expr.Pos, "expr is empty")
		}
		tag.Expr = doc.Expr.Text
		tag.ExprPos = doc.Expr.Pos
		if doc.Expr.Block {
			tag.ExprPos = blockStart(l.data[doc.Expr.Pos.File], doc.Expr.Pos)
		}
	}

	if len(doc.Enum) > 0 {
		tag.Enum = make(map[int64]string, len(doc.Enum))
		for _, e := range doc.Enum {
			n, err := strconv.ParseInt(strings.ReplaceAll(e.Key, "_", ""), 0, 64)
			if err != nil {
				l.errorf(e.KeyPos, "enum key %q is not an integer", e.Key)
				continue
			}
			if _, dup := tag.Enum[n]; dup {
				l.errorf(e.KeyPos, "enum key %q repeats the value %d", e.Key, n)
				continue
			}
			tag.Enum[n] = e.Value
		}
	}
	if doc.Datatype.Valid() {
		k, width, ok := parseDatatype(doc.Datatype.V)
		if !ok {
			l.errorf(doc.Datatype.Pos, "unknown datatype %q%s; use %s",
				doc.Datatype.V, suggestDatatype(doc.Datatype.V), datatypeList)
		}
		tag.Datatype, tag.Width = k, width
	}
	if doc.Deadband.Valid() {
		tag.Deadband = l.deadband(doc.Deadband)
	}
	tag.Heartbeat = l.positiveDuration("heartbeat", doc.Heartbeat)
	tag.Poll = l.positiveDuration("poll", doc.Poll)
	return td
}

// addressError reports a ParseAddress error at the key it blames; what
// prefixes the message when the problem is specific to one instance.
func (l *loader) addressError(err error, doc *tagDoc, offsetPos Pos, what string) {
	var ae *AddressError
	if !errors.As(err, &ae) {
		l.errorf(doc.Address.Pos, "%s%v", what, err)
		return
	}
	pos := doc.Address.Pos
	msg := ae.Msg
	switch ae.Field {
	case FieldAddress:
		msg = fmt.Sprintf("bad address %q: %s", doc.Address.V, ae.Msg)
	case FieldType:
		if doc.Type.Present() {
			pos = doc.Type.Pos
		}
	case FieldLength:
		if doc.Length.Present() {
			pos = doc.Length.Pos
		}
	case FieldOrder:
		if doc.Order.Present() {
			pos = doc.Order.Pos
		}
	case FieldOffset, FieldUnitID:
		pos = offsetPos
	case FieldSampling:
		if doc.Sampling.Present() {
			pos = doc.Sampling.Pos
		}
	case FieldQueueSize:
		if doc.QueueSize.Present() {
			pos = doc.QueueSize.Pos
		}
	case FieldDataDeadband:
		if doc.DataDeadband.Present() {
			pos = doc.DataDeadband.Pos
		}
	}
	l.errorf(pos, "%s%s", what, msg)
}

// datatypeList names every datatype for the "unknown datatype" message:
// "bool, int8, ..., float64 or string".
var datatypeList = func() string {
	names := make([]string, len(datatypes))
	for i, d := range datatypes {
		names[i] = d.name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}()

// suggestDatatype formats a "did you mean" for an unknown datatype. A name
// without digits ("float", "int") did not choose a width, so the
// full-width names are offered first: the suggestion never narrows the
// values behind the user's back.
func suggestDatatype(word string) string {
	all := make([]string, 0, len(datatypes))
	var wide []string
	for _, d := range datatypes {
		all = append(all, d.name)
		if d.width == 0 {
			wide = append(wide, d.name)
		}
	}
	if !strings.ContainsAny(word, "0123456789") {
		if s := didYouMean(word, wide); s != "" {
			return s
		}
	}
	return didYouMean(word, all)
}

func (l *loader) deadband(at At[Value]) Deadband {
	v := at.V
	if f, ok := v.AsFloat(); ok && v.Kind() != KindBool {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			l.errorf(at.Pos, "deadband must be a non-negative number, got %s", v)
			return Deadband{}
		}
		return Deadband{Value: f}
	}
	if v.Kind() == KindString {
		s := strings.TrimSpace(v.Str())
		if num, ok := strings.CutSuffix(s, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err == nil && f >= 0 && !math.IsInf(f, 0) {
				return Deadband{Value: f, Percent: true}
			}
		}
	}
	if v.IsNull() {
		return Deadband{}
	}
	l.errorf(at.Pos, "expected a deadband like 0.5 or 2%%, got %q", v.String())
	return Deadband{}
}

func (l *loader) positiveDuration(key string, at At[time.Duration]) time.Duration {
	if at.Valid() && at.V <= 0 {
		l.errorf(at.Pos, "%s must be more than 0, got %s", key, at.V)
		return 0
	}
	return at.V
}

// addAssets resolves the file's asset instances.
func (l *loader) addAssets(doc *fileDoc) []*Asset {
	base := doc.Base.V
	baseOK := true
	if doc.Base.Failed() {
		baseOK = false
	} else if doc.Base.Present() && base != "" {
		if err := ValidateTopic(base); err != nil {
			l.errorf(doc.Base.Pos, "invalid base %q: %v", base, err)
			baseOK = false
		}
	}
	var out []*Asset
	for i := range doc.Assets {
		kv := &doc.Assets[i]
		if a := l.addAsset(kv, base, baseOK); a != nil {
			out = append(out, a)
		}
	}
	return out
}

func (l *loader) addAsset(kv *KV[assetDoc], base string, baseOK bool) *Asset {
	doc := &kv.Value
	path := kv.Key
	if base != "" {
		path = base + "/" + kv.Key
	}
	pathOK := baseOK
	if err := ValidateTopic(kv.Key); err != nil {
		l.errorf(kv.KeyPos, "invalid asset path %q: %s", kv.Key, l.levelError(kv.Key, base, err))
		pathOK = false
	}
	if pathOK {
		if n := strings.Count(path, "/") + 1; n != len(l.levels) {
			l.errorf(kv.KeyPos, "asset path %q has %d levels, want %d (%s)", path, n, len(l.levels), strings.Join(l.levels, "/"))
		}
	}
	if first, dup := l.assets[path]; dup {
		l.errorf(kv.KeyPos, "duplicate asset %q (first defined at %s)", path, first)
		return nil
	}
	l.assets[path] = kv.KeyPos

	a := &Asset{
		Path:      path,
		Type:      doc.Type.V,
		Source:    doc.Source.V,
		SourcePos: doc.Source.Pos,
		Pos:       kv.KeyPos,
	}
	if doc.UnitID.Valid() && (doc.UnitID.V < 0 || doc.UnitID.V > 255) {
		l.errorf(doc.UnitID.Pos, "unit_id %d is out of range (0..255)", doc.UnitID.V)
	} else {
		a.UnitID = doc.UnitID.V
	}
	offset := doc.Offset.V
	offsetOK := !doc.Offset.Failed()
	if doc.Offset.Valid() && (offset < 0 || offset > maxRegister) {
		l.errorf(doc.Offset.Pos, "offset %d is out of range (0..%d)", offset, maxRegister)
		offsetOK = false
	}
	a.Poll = l.positiveDuration("poll", doc.Poll)
	if doc.Source.Present() && strings.TrimSpace(doc.Source.V) == "" {
		l.errorf(doc.Source.Pos, "source is empty")
	}

	t := l.types[doc.Type.V]
	if t == nil {
		if doc.Type.V != "" {
			l.errorf(doc.Type.Pos, "unknown asset type %q%s", doc.Type.V, didYouMean(doc.Type.V, l.typeNames))
		}
		return a
	}
	if t.hasAddressed && a.Source == "" && !doc.Source.Present() {
		l.errorf(kv.KeyPos, "asset %q needs a source: type %s has tags with addresses", kv.Key, t.name)
	}
	a.Params = l.params(kv, t)

	offsetPos := doc.Offset.Pos
	if !doc.Offset.Present() {
		offsetPos = kv.KeyPos
	}
	// One backing array per asset: thousands of assets make this the
	// loader's largest allocation.
	tags := make([]Tag, len(t.tags))
	a.Tags = make([]*Tag, 0, len(t.tags))
	for i, td := range t.tags {
		tag := &tags[i]
		*tag = td.template
		tag.Topic = path + "/" + tag.Name
		if td.addrOK && offsetOK {
			opt := td.addrOpt
			opt.Offset = offset
			opt.UnitID = a.UnitID
			text, _, err := expandParams(td.doc.Address.V, func(name string) (Value, bool) {
				v, ok := a.Params[name]
				return v, ok
			})
			var addr *Address
			if err == nil {
				addr, err = ParseAddress(text, opt)
			}
			var ae *AddressError
			switch {
			case err != nil && text != td.doc.Address.V && errors.As(err, &ae) && ae.Field == FieldAddress:
				// The instance's params made the address wrong: point at
				// the instance.
				l.errorf(kv.KeyPos, "tag %q: address %q expands to %q: %s", tag.Name, td.doc.Address.V, text, ae.Msg)
			case err != nil:
				l.addressError(err, td.doc, offsetPos, fmt.Sprintf("tag %q: ", tag.Name))
			}
			tag.Address = addr
		}
		if tag.Address == nil && (td.doc.Address.Present() || !td.doc.Expr.Set) {
			// The problem is reported; a placeholder of unknown protocol
			// keeps the tag addressed in the partial model, so compiling
			// its expression does not report "raw" as unknown as well.
			tag.Address = &Address{Text: td.doc.Address.V, Key: "invalid:" + tag.Topic}
		}
		if first, dup := l.topics[tag.Topic]; dup {
			l.errorf(kv.KeyPos, "duplicate topic %q (first defined at %s)", tag.Topic, first)
		} else {
			l.topics[tag.Topic] = kv.KeyPos
		}
		a.Tags = append(a.Tags, tag)
	}
	return a
}

// levelError names the hierarchy level an invalid asset path segment sits
// at, e.g. `line level "line 1": ...`.
func (l *loader) levelError(key, base string, err error) string {
	var te *TopicError
	if !errors.As(err, &te) {
		return err.Error()
	}
	idx := te.Level
	if base != "" {
		idx += strings.Count(base, "/") + 1
	}
	if idx >= 0 && idx < len(l.levels) {
		return fmt.Sprintf("%s level %q %s", l.levels[idx], te.Text, te.Reason)
	}
	return te.Error()
}

// params merges the type's defaults with the instance's values.
func (l *loader) params(kv *KV[assetDoc], t *typeDef) map[string]Value {
	out := make(map[string]Value, len(t.params))
	for _, p := range t.params {
		if !p.Value.IsNull() {
			out[p.Key] = p.Value
		}
	}
	given := map[string]bool{}
	for _, p := range kv.Value.Params {
		def, declared := t.params.Get(p.Key)
		if !declared {
			l.errorf(p.KeyPos, "unknown param %q for type %s%s", p.Key, t.name, didYouMean(p.Key, t.params.Keys()))
			continue
		}
		given[p.Key] = true
		switch {
		case p.Value.IsNull():
			l.errorf(p.ValuePos, "param %q needs a value", p.Key)
			continue
		case !def.IsNull() && valueClass(def) != valueClass(p.Value):
			l.errorf(p.ValuePos, "param %q must be %s like its default %s in type %s, got %q",
				p.Key, valueClass(def), showValue(def), t.name, p.Value.String())
			continue
		}
		v := p.Value
		if def.Kind() == KindFloat && v.Kind() == KindInt {
			// scale: 1 on an instance of a type whose default is 1.0 is
			// the same number; keep the type's kind so every instance's
			// expressions have the same types.
			v = FloatValue(float64(v.Int()))
		}
		out[p.Key] = v
	}
	for _, p := range t.params {
		if p.Value.IsNull() && !given[p.Key] {
			l.errorf(kv.KeyPos, "missing param %q (required by type %s at %s)", p.Key, t.name, p.KeyPos)
		}
	}
	return out
}

// showValue writes a value as it would appear in YAML: text quoted.
func showValue(v Value) string {
	if v.Kind() == KindString {
		return strconv.Quote(v.Str())
	}
	return v.String()
}

// valueClass groups value kinds the way a user thinks of them: any integer
// or float is a number.
func valueClass(v Value) string {
	switch v.Kind() {
	case KindInt, KindUint, KindFloat:
		return "a number"
	case KindBool:
		return "true or false"
	case KindString:
		return "text"
	}
	return "null"
}

// TopicError says which level of a topic path is invalid and why.
type TopicError struct {
	Level  int    // 0-based index of the offending level
	Text   string // the level's text
	Reason string
}

func (e *TopicError) Error() string {
	return fmt.Sprintf("level %d %q %s", e.Level+1, e.Text, e.Reason)
}

// ValidateTopic checks a UNS topic path or part of one: levels separated by
// '/', each of letters, digits, '_' and '-', none empty and none starting
// with '_' (reserved for _meta and _gateways). Errors are *TopicError.
func ValidateTopic(path string) error {
	if path == "" {
		return &TopicError{Level: 0, Text: "", Reason: "is empty"}
	}
	level := 0
	start := 0
	for i := 0; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			continue
		}
		seg := path[start:i]
		switch {
		case seg == "" && i == 0:
			return &TopicError{Level: 0, Text: seg, Reason: "is empty (the path must not start with /)"}
		case seg == "" && i == len(path):
			return &TopicError{Level: level, Text: seg, Reason: "is empty (the path must not end with /)"}
		case seg == "":
			return &TopicError{Level: level, Text: seg, Reason: "is empty (// in the path)"}
		case seg[0] == '_':
			return &TopicError{Level: level, Text: seg, Reason: "starts with _, which is reserved for _meta and _gateways"}
		}
		for j := 0; j < len(seg); {
			r, size := decodeRune(seg[j:])
			if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return &TopicError{Level: level, Text: seg, Reason: fmt.Sprintf("contains %q; use only letters, digits, _ and -", r)}
			}
			j += size
		}
		level++
		start = i + 1
	}
	return nil
}

// partial drops nil assets (duplicates) from a model that has problems.
func partial(m *Model) *Model {
	m.Assets = slices.DeleteFunc(m.Assets, func(a *Asset) bool { return a == nil })
	return m
}
