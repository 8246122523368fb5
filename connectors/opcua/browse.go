package opcua

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

// DefaultBrowseDepth is how many levels below the start node Browse walks
// when depth is 0.
const DefaultBrowseDepth = 10

// BrowsedNode is one node found by Browse.
type BrowsedNode struct {
	// NodeID is the node id with its namespace URI (nsu=URI;s=...), which
	// stays right when the server renumbers its namespaces; namespace 0
	// nodes are written i=2253.
	NodeID string
	// NodeIDIndex is the node id with the namespace index the server uses
	// now (ns=N;s=...).
	NodeIDIndex string
	// BrowsePath is the path of browse names from the Root folder, as a
	// model address (/Objects/Line2/Filler1/Speed); "" when the start
	// node's place below Root could not be found.
	BrowsePath  string
	BrowseName  string
	DisplayName string
	// Class is the node class: Object or Variable.
	Class string
	// DataType (variables) names the value's type: Double, Int32, ... for
	// the standard types, else the data type's node id; "[]" is appended
	// for arrays.
	DataType string
	// Access (variables) is "read", "write", "read/write" or "none": what
	// the session's user may do with the value.
	Access string
	// Depth is the number of levels below the start node (children are 1).
	Depth int
}

// Browse connects to cfg's endpoint with cfg's security and login (as a
// source does), and walks the address space from start (a node id in any
// model form, ns=, nsu=, i=, or a browse path /Objects/...; "" is the
// Objects folder) down to depth levels (0 = DefaultBrowseDepth), following
// hierarchical forward references (Organizes, HasComponent, ...; not
// properties) to Objects and Variables. Each node is visited once, parents
// before children, in the server's order; the start node itself is not
// visited. Standard nodes (namespace 0, such as the Server object) are left
// out unless the walk starts inside namespace 0 below Objects. A visit
// error stops the walk and is returned.
func Browse(ctx context.Context, cfg Config, start string, depth int, visit func(BrowsedNode) error) error {
	var probs []string
	checkSecurity(&cfg, &probs)
	if len(probs) > 0 {
		return fmt.Errorf("browse %s: %w: %s", cfg.Endpoint, connectors.ErrConfig, strings.Join(probs, "; "))
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	cfg.SessionTimeout = cmp.Or(cfg.SessionTimeout, DefaultSessionTimeout)
	if depth <= 0 {
		depth = DefaultBrowseDepth
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := connect(ctx, &cfg, log, nil)
	if err != nil {
		return fmt.Errorf("browse: %w", err)
	}
	defer closeQuietly(c, cfg.Timeout)

	w := &spaceWalk{c: c, ns: c.Namespaces(), maxDepth: depth, visit: visit, seen: map[string]bool{}, log: log}
	node, path, err := w.startNode(ctx, start)
	if err != nil {
		return fmt.Errorf("browse %s: start node %q: %w", cfg.Endpoint, start, err)
	}
	// Standard nodes below Objects (Server, ...) are noise unless asked for.
	w.skipNS0 = node.Namespace() != 0 || node.IntID() == id.ObjectsFolder || node.IntID() == id.RootFolder
	w.seen[node.String()] = true
	if err := w.walk(ctx, node, path, 1); err != nil {
		return fmt.Errorf("browse %s: %w", cfg.Endpoint, err)
	}
	return nil
}

// spaceWalk holds one Browse's state.
type spaceWalk struct {
	c        *opcua.Client
	ns       []string // the server's namespace array
	maxDepth int
	visit    func(BrowsedNode) error
	seen     map[string]bool
	skipNS0  bool
	log      *slog.Logger
}

func (w *spaceWalk) walk(ctx context.Context, parent *ua.NodeID, path string, depth int) error {
	refs, err := w.children(ctx, parent)
	if err != nil {
		return err
	}
	var nodes []BrowsedNode
	var ids []*ua.NodeID
	for _, r := range refs {
		nid := w.nodeIDOf(r.NodeID)
		key := nid.String()
		if w.seen[key] || (w.skipNS0 && nid.Namespace() == 0) {
			continue
		}
		w.seen[key] = true
		n := BrowsedNode{
			NodeID:      w.uriForm(nid),
			NodeIDIndex: indexForm(nid),
			BrowseName:  r.BrowseName.Name,
			Class:       strings.TrimPrefix(r.NodeClass.String(), "NodeClass"),
			Depth:       depth,
		}
		if r.DisplayName != nil {
			n.DisplayName = r.DisplayName.Text
		}
		if path != "" {
			n.BrowsePath = path + "/" + escapePathSegment(r.BrowseName.Name)
		}
		nodes = append(nodes, n)
		ids = append(ids, nid)
	}
	if err := w.readVariables(ctx, nodes, ids); err != nil {
		return err
	}
	for i, n := range nodes {
		if err := w.visit(n); err != nil {
			return err
		}
		if depth < w.maxDepth {
			if err := w.walk(ctx, ids[i], n.BrowsePath, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// children returns the hierarchical forward references of n to Objects and
// Variables, without properties, following continuation points.
func (w *spaceWalk) children(ctx context.Context, n *ua.NodeID) ([]*ua.ReferenceDescription, error) {
	return w.references(ctx, n, ua.BrowseDirectionForward, uint32(ua.NodeClassObject|ua.NodeClassVariable))
}

func (w *spaceWalk) references(ctx context.Context, n *ua.NodeID, dir ua.BrowseDirection, classes uint32) ([]*ua.ReferenceDescription, error) {
	res, err := w.c.Browse(ctx, &ua.BrowseRequest{
		View:                          &ua.ViewDescription{ViewID: ua.NewTwoByteNodeID(0)},
		RequestedMaxReferencesPerNode: 1000,
		NodesToBrowse: []*ua.BrowseDescription{{
			NodeID:          n,
			BrowseDirection: dir,
			ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
			IncludeSubtypes: true,
			NodeClassMask:   classes,
			ResultMask:      uint32(ua.BrowseResultMaskAll),
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", n, err)
	}
	if len(res.Results) != 1 {
		return nil, fmt.Errorf("browse %s: %d results for 1 node", n, len(res.Results))
	}
	r := res.Results[0]
	if r.StatusCode != ua.StatusOK {
		// One node the server will not browse does not end the walk.
		w.log.Debug("opcua: browse refused for a node", "node", n.String(), "status", r.StatusCode)
		return nil, nil
	}
	var out []*ua.ReferenceDescription
	keep := func(refs []*ua.ReferenceDescription) {
		for _, ref := range refs {
			if ref.NodeID == nil || ref.NodeID.ServerIndex != 0 || ref.BrowseName == nil ||
				ref.ReferenceTypeID != nil && ref.ReferenceTypeID.Namespace() == 0 && ref.ReferenceTypeID.IntID() == id.HasProperty {
				continue
			}
			out = append(out, ref)
		}
	}
	keep(r.References)
	for cp := r.ContinuationPoint; len(cp) > 0; {
		next, err := w.c.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cp}})
		if err != nil {
			return nil, fmt.Errorf("browse next %s: %w", n, err)
		}
		if len(next.Results) != 1 || next.Results[0].StatusCode != ua.StatusOK {
			break
		}
		keep(next.Results[0].References)
		cp = next.Results[0].ContinuationPoint
	}
	return out, nil
}

// readVariables fills DataType and Access of the variables among nodes.
func (w *spaceWalk) readVariables(ctx context.Context, nodes []BrowsedNode, ids []*ua.NodeID) error {
	attrs := []ua.AttributeID{ua.AttributeIDDataType, ua.AttributeIDValueRank, ua.AttributeIDAccessLevel, ua.AttributeIDUserAccessLevel}
	var vars []int
	for i, n := range nodes {
		if n.Class == "Variable" {
			vars = append(vars, i)
		}
	}
	// Small requests: some servers allow only a few nodes per Read.
	const perRead = 8
	for len(vars) > 0 {
		batch := vars[:min(perRead, len(vars))]
		vars = vars[len(batch):]
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, i := range batch {
			for _, a := range attrs {
				req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ids[i], AttributeID: a})
			}
		}
		res, err := w.c.Read(ctx, req)
		if err != nil {
			return fmt.Errorf("read data types: %w", err)
		}
		if len(res.Results) != len(req.NodesToRead) {
			return fmt.Errorf("read data types: %d results for %d attributes", len(res.Results), len(req.NodesToRead))
		}
		for k, i := range batch {
			dv := res.Results[k*len(attrs) : (k+1)*len(attrs)]
			nodes[i].DataType = w.dataTypeName(dv[0], dv[1])
			nodes[i].Access = accessText(dv[2], dv[3])
		}
	}
	return nil
}

// Names of standard data types where gopcua's table differs from the
// specification's spelling.
var dataTypeNames = map[uint32]string{id.GUID: "Guid"}

func (w *spaceWalk) dataTypeName(dt, rank *ua.DataValue) string {
	if dt == nil || dt.Status != ua.StatusOK || dt.Value == nil {
		return ""
	}
	nid, ok := dt.Value.Value().(*ua.NodeID)
	if !ok || nid == nil {
		return ""
	}
	name := w.uriForm(nid)
	if nid.Namespace() == 0 && nid.Type() != ua.NodeIDTypeString && nid.Type() != ua.NodeIDTypeGUID && nid.Type() != ua.NodeIDTypeByteString {
		if s, ok := dataTypeNames[nid.IntID()]; ok {
			name = s
		} else if s := id.Name(nid.IntID()); s != "" && !strings.HasPrefix(s, "0x") && s != strconv.Itoa(int(nid.IntID())) {
			name = s
		}
	}
	if rank != nil && rank.Status == ua.StatusOK && rank.Value != nil {
		if r, ok := rank.Value.Value().(int32); ok && r >= 0 {
			name += "[]"
		}
	}
	return name
}

func accessText(level, user *ua.DataValue) string {
	bits := func(dv *ua.DataValue) (byte, bool) {
		if dv == nil || dv.Status != ua.StatusOK || dv.Value == nil {
			return 0, false
		}
		b, ok := dv.Value.Value().(byte)
		return b, ok
	}
	a, ok := bits(level)
	if !ok {
		return ""
	}
	if u, ok := bits(user); ok {
		a &= u
	}
	read, write := a&byte(ua.AccessLevelTypeCurrentRead) != 0, a&byte(ua.AccessLevelTypeCurrentWrite) != 0
	switch {
	case read && write:
		return "read/write"
	case read:
		return "read"
	case write:
		return "write"
	}
	return "none"
}

// nodeIDOf turns a reference's target into a node id of this server,
// resolving the namespace URI a server may send instead of an index.
func (w *spaceWalk) nodeIDOf(e *ua.ExpandedNodeID) *ua.NodeID {
	nid := ua.NewNodeIDFromExpandedNodeID(e)
	if e.NamespaceURI == "" {
		return nid
	}
	i := slices.Index(w.ns, e.NamespaceURI)
	if i < 0 {
		return nid
	}
	if n, err := ua.ParseNodeID("ns=" + strconv.Itoa(i) + ";" + identifierText(nid)); err == nil {
		return n
	}
	return nid
}

// uriForm writes a node id with its namespace URI (nsu=URI;...); namespace
// 0 and namespaces missing from the server's array keep the index form.
func (w *spaceWalk) uriForm(n *ua.NodeID) string {
	ns := int(n.Namespace())
	if ns == 0 || ns >= len(w.ns) || w.ns[ns] == "" {
		return indexForm(n)
	}
	return "nsu=" + w.ns[ns] + ";" + identifierText(n)
}

// indexForm writes a node id as ns=N;T=ID (T=ID for namespace 0), with
// GUIDs in lower case as model files write them.
func indexForm(n *ua.NodeID) string {
	if n.Namespace() == 0 {
		return identifierText(n)
	}
	return "ns=" + strconv.Itoa(int(n.Namespace())) + ";" + identifierText(n)
}

func identifierText(n *ua.NodeID) string {
	switch n.Type() {
	case ua.NodeIDTypeString:
		return "s=" + n.StringID()
	case ua.NodeIDTypeGUID:
		return "g=" + strings.ToLower(n.StringID())
	case ua.NodeIDTypeByteString:
		return "b=" + n.StringID()
	}
	return "i=" + strconv.FormatUint(uint64(n.IntID()), 10)
}

// escapePathSegment writes a browse name as a model browse path segment
// (\ escapes / and \).
func escapePathSegment(s string) string {
	if !strings.ContainsAny(s, `/\`) {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `/`, `\/`).Replace(s)
}

// startNode resolves Browse's start argument to a node id and its browse
// path from Root ("" when unknown).
func (w *spaceWalk) startNode(ctx context.Context, start string) (*ua.NodeID, string, error) {
	if strings.TrimSpace(start) == "" {
		return ua.NewNumericNodeID(0, id.ObjectsFolder), "/Objects", nil
	}
	addr, err := model.ParseAddress(start, model.AddressOptions{})
	if err != nil || addr.OPCUA == nil {
		return nil, "", fmt.Errorf("want a node id (ns=2;s=Name, nsu=URI;i=5, i=85) or a browse path (/Objects/Folder): %v", err)
	}
	a := addr.OPCUA
	if a.IDType == 0 {
		n, err := w.followPath(ctx, a.BrowsePath)
		return n, a.Key(), err
	}
	ns := a.Namespace
	if a.NamespaceURI != "" {
		i := slices.Index(w.ns, a.NamespaceURI)
		if i < 0 {
			return nil, "", fmt.Errorf("the server has no namespace %q; it has %s", a.NamespaceURI, strings.Join(w.ns, ", "))
		}
		ns = uint16(i)
	}
	n, err := ua.ParseNodeID("ns=" + strconv.Itoa(int(ns)) + ";" + string(a.IDType) + "=" + a.ID)
	if err != nil {
		return nil, "", err
	}
	return n, w.pathOf(ctx, n), nil
}

// followPath resolves a browse path from Root by browsing each level.
func (w *spaceWalk) followPath(ctx context.Context, segs []string) (*ua.NodeID, error) {
	cur := ua.NewNumericNodeID(0, id.RootFolder)
	for i, seg := range segs {
		wantNS, name, qualified := model.SplitQualified(seg)
		refs, err := w.references(ctx, cur, ua.BrowseDirectionForward, 0)
		if err != nil {
			return nil, err
		}
		j := slices.IndexFunc(refs, func(r *ua.ReferenceDescription) bool {
			return r.BrowseName.Name == name && (!qualified || r.BrowseName.NamespaceIndex == wantNS)
		})
		if j < 0 {
			return nil, fmt.Errorf("no node %q below /%s", seg, strings.Join(segs[:i], "/"))
		}
		cur = w.nodeIDOf(refs[j].NodeID)
	}
	return cur, nil
}

// pathOf finds n's browse path from Root by following inverse hierarchical
// references; "" when it cannot (a server without inverse browsing, or a
// node outside the Root tree).
func (w *spaceWalk) pathOf(ctx context.Context, n *ua.NodeID) string {
	var segs []string
	cur := n
	for range 32 {
		if cur.Namespace() == 0 && cur.IntID() == id.RootFolder {
			slices.Reverse(segs)
			if len(segs) == 0 {
				return ""
			}
			return "/" + strings.Join(segs, "/")
		}
		res, err := w.c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: cur, AttributeID: ua.AttributeIDBrowseName}}})
		if err != nil || len(res.Results) != 1 || res.Results[0].Status != ua.StatusOK || res.Results[0].Value == nil {
			return ""
		}
		qn, ok := res.Results[0].Value.Value().(*ua.QualifiedName)
		if !ok || qn == nil {
			return ""
		}
		segs = append(segs, escapePathSegment(qn.Name))
		parents, err := w.references(ctx, cur, ua.BrowseDirectionInverse, 0)
		if err != nil || len(parents) == 0 {
			return ""
		}
		cur = w.nodeIDOf(parents[0].NodeID)
	}
	return ""
}

// Skeleton writes a model file skeleton for the variables among nodes
// (objects only give context): one asset type, Browsed, with a tag per
// variable (names from browse names: lower case, [a-z0-9_-], made unique
// with the parent's name or a number), addresses in the nsu= form, the data
// type and access in comments, and one asset instance of it bound to
// source. The result loads with model.Load; rename the type, the asset path
// and the tags to taste.
func Skeleton(w io.Writer, nodes []BrowsedNode, source string) error {
	var b strings.Builder
	var vars []BrowsedNode
	for _, n := range nodes {
		if n.Class == "Variable" {
			vars = append(vars, n)
		}
	}
	fmt.Fprintf(&b, "# Model skeleton from `unsgate browse`: one asset type with a tag for each of\n")
	fmt.Fprintf(&b, "# the %d variables found, and one asset of that type read from source %q.\n", len(vars), source)
	b.WriteString("# Paste it into a model file, then rename the type, the asset path and the\n")
	b.WriteString("# tags, and delete what you do not need. nsu= addresses name the namespace by\n")
	b.WriteString("# its URI, so they stay right when the server renumbers its namespaces.\n")
	b.WriteString("types:\n  Browsed:\n")
	b.WriteString("    description: Variables found by unsgate browse\n")
	b.WriteString("    tags:\n")
	used := map[string]bool{}
	tags := 0
	for _, n := range vars {
		where := n.BrowsePath
		if where == "" {
			where = n.NodeIDIndex
		}
		what := strings.Join(nonEmpty(n.DataType, n.Access), ", ")
		if why := unbindable(n.NodeID); why != "" {
			fmt.Fprintf(&b, "      # %s\n", commentText(fmt.Sprintf("%s: its node id %s %s; bind it by browse path instead", where, strconv.Quote(n.NodeID), why)))
			continue
		}
		name := uniqueTagName(n, used)
		comment := where
		if what != "" {
			comment = what + ": " + where
		}
		fmt.Fprintf(&b, "      %s:\n", yamlKey(name))
		fmt.Fprintf(&b, "        address: %s  # %s\n", strconv.Quote(n.NodeID), commentText(comment))
		tags++
	}
	if tags == 0 {
		return errors.New("model skeleton: no variables to bind")
	}
	b.WriteString("assets:\n")
	b.WriteString("  # enterprise/site/area/line/cell: the asset's place in the namespace.\n")
	b.WriteString("  enterprise/site/area/line/cell:\n")
	b.WriteString("    type: Browsed\n")
	fmt.Fprintf(&b, "    source: %s\n", strconv.Quote(source))
	_, err := io.WriteString(w, b.String())
	return err
}

// unbindable says why nodeID cannot be a model address that binds this
// very node ("" when it can): model files must load, and read back the
// same id (they trim spaces, and a { starts a {param}).
func unbindable(nodeID string) string {
	switch {
	case strings.Contains(nodeID, "{"):
		return "contains {, which model files read as a {param}"
	case !utf8.ValidString(nodeID):
		return "is not valid UTF-8"
	}
	a, err := model.ParseAddress(nodeID, model.AddressOptions{})
	switch {
	case err != nil:
		return "is not a valid model address (" + err.Error() + ")"
	case a.OPCUA == nil || a.OPCUA.Key() != nodeID:
		return "would be read as another node id"
	}
	return ""
}

// commentText makes s safe in a YAML comment: YAML refuses control
// characters and invalid UTF-8 anywhere in a file, and ends a comment at
// any line break (also NEL, U+2028 and U+2029).
func commentText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r != '\t' && !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

func nonEmpty(ss ...string) []string {
	return slices.DeleteFunc(ss, func(s string) bool { return s == "" })
}

// uniqueTagName derives a tag name from the browse name, prefixed with the
// parent's name and then numbered when taken.
func uniqueTagName(n BrowsedNode, used map[string]bool) string {
	name := tagName(n.BrowseName)
	if used[name] {
		if segs := strings.Split(n.BrowsePath, "/"); len(segs) >= 3 {
			if p := tagName(segs[len(segs)-2]); p != "tag" {
				name = p + "_" + name
			}
		}
	}
	base := name
	for i := 2; used[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	used[name] = true
	return name
}

// tagName lower-cases a browse name and keeps [a-z0-9_-], with other runs
// of characters as one _; never empty, never starting with _.
func tagName(s string) string {
	var b strings.Builder
	under := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
			under = false
			continue
		}
		if !under {
			b.WriteByte('_')
			under = true
		}
	}
	name := strings.Trim(b.String(), "_")
	if name == "" {
		return "tag"
	}
	return name
}

// yamlKey quotes a tag name YAML would read as something other than text.
func yamlKey(s string) string {
	switch s {
	case "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return strconv.Quote(s)
	}
	if s[0] < 'a' || s[0] > 'z' {
		return strconv.Quote(s)
	}
	return s
}
