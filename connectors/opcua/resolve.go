package opcua

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// Browse walks hierarchical forward references (Organizes, HasComponent,
// HasProperty and the other subtypes of HierarchicalReferences), the
// references a browse path follows (Part 4, 7.30 RelativePath).
var (
	nodeRootFolder   = ua.NewNumericNodeID(0, id.RootFolder)
	refHierarchical  = ua.NewNumericNodeID(0, id.HierarchicalReferences)
	browseResultMask = uint32(ua.BrowseResultMaskBrowseName | ua.BrowseResultMaskNodeClass)
)

// maxContinuationRounds is how many BrowseNext rounds a server may take
// before it is taken to loop.
const maxContinuationRounds = 1000

// resolve finds the node of every binding for this session: ns= node ids
// as they are, nsu= through the server's namespace array, browse paths by
// Browse from the Root folder. Bindings that do not resolve are logged and
// emitted BAD with the reason's status code. An error means a request
// failed, which ends the session.
func (ss *session) resolve(ctx context.Context) error {
	var paths []int
	var badIdx []int
	var badStatus []ua.StatusCode
	fail := func(i int, status ua.StatusCode, msg string, args ...any) {
		badIdx, badStatus = append(badIdx, i), append(badStatus, status)
		ss.logProblem(ss.src.binds[i].key, msg, args...)
	}
	for i := range ss.src.binds {
		b := &ss.src.binds[i]
		switch {
		case b.node != nil:
			ss.nodes[i] = b.node
		case b.addr.IDType == 0:
			paths = append(paths, i)
		default:
			ns := slices.Index(ss.limits.namespaces, b.addr.NamespaceURI)
			if ns < 0 || ns > 0xffff {
				fail(i, ua.StatusBadNodeIDUnknown, "namespace URI not in the server's namespace array; is the URI spelled as the server publishes it?",
					"namespace_uri", b.addr.NamespaceURI, "server_namespaces", ss.limits.namespaces)
				continue
			}
			// New checked the identifier, so this cannot fail.
			node, err := nodeIDFor(&b.addr, uint16(ns))
			if err != nil {
				fail(i, ua.StatusBadNodeIDInvalid, "node id: "+err.Error())
				continue
			}
			ss.nodes[i] = node
		}
	}
	if len(paths) > 0 {
		w := walker{ss: ss, children: map[string]*browsed{}}
		if err := w.resolve(ctx, paths, fail); err != nil {
			return err
		}
	}
	ss.src.unresolved.Store(int64(len(badIdx)))
	ss.emitBad(badIdx, badStatus)
	return nil
}

// browsed is what one Browse of a node returned.
type browsed struct {
	status ua.StatusCode
	refs   []*ua.ReferenceDescription
}

// walker resolves browse paths level by level: at each depth it browses
// every parent that some path still needs, all in one Browse request (per
// MaxNodesPerBrowse), and remembers the children, so paths sharing a
// prefix cost one Browse per node.
type walker struct {
	ss       *session
	children map[string]*browsed // by parent node id text
}

type pathWalk struct {
	bind  int
	segs  []string
	node  *ua.NodeID
	depth int // segments matched
}

func (w *walker) resolve(ctx context.Context, idx []int, fail func(int, ua.StatusCode, string, ...any)) error {
	walks := make([]*pathWalk, 0, len(idx))
	for _, i := range idx {
		walks = append(walks, &pathWalk{bind: i, segs: w.ss.src.binds[i].addr.BrowsePath, node: nodeRootFolder})
	}
	for len(walks) > 0 {
		var need []*ua.NodeID
		seen := map[string]bool{}
		for _, pw := range walks {
			k := pw.node.String()
			if w.children[k] == nil && !seen[k] {
				seen[k] = true
				need = append(need, pw.node)
			}
		}
		if err := w.browse(ctx, need); err != nil {
			return err
		}
		next := walks[:0]
		for _, pw := range walks {
			b := &w.ss.src.binds[pw.bind]
			res := w.children[pw.node.String()]
			if quality(res.status) == model.QualityBad {
				fail(pw.bind, res.status, "browse path: browsing a node on the way failed",
					"path", b.key, "at", pathPrefix(pw.segs, pw.depth), "status", res.status.Error())
				continue
			}
			child := w.match(res.refs, pw.segs[pw.depth])
			if child == nil {
				fail(pw.bind, ua.StatusBadNoMatch, "browse path does not resolve: no child with this browse name; was the node renamed or moved?",
					"path", b.key, "segment", pw.depth+1, "name", pw.segs[pw.depth], "under", pathPrefix(pw.segs, pw.depth))
				continue
			}
			pw.node, pw.depth = child, pw.depth+1
			if pw.depth == len(pw.segs) {
				w.ss.nodes[pw.bind] = child
				w.ss.log.Debug("browse path resolved", "path", b.key, "node", child.String())
				continue
			}
			next = append(next, pw)
		}
		walks = next
	}
	return nil
}

// pathPrefix renders the first n segments of a path ("/" for none).
func pathPrefix(segs []string, n int) string {
	if n == 0 {
		return "/"
	}
	return "/" + strings.Join(segs[:n], "/")
}

// match returns the node of the first reference whose browse name is the
// segment's (name, and namespace index when written N:Name).
func (w *walker) match(refs []*ua.ReferenceDescription, seg string) *ua.NodeID {
	ns, name, qualified := model.SplitQualified(seg)
	for _, r := range refs {
		if r == nil || r.BrowseName == nil || r.NodeID == nil || r.NodeID.NodeID == nil {
			continue
		}
		if r.BrowseName.Name != name || qualified && r.BrowseName.NamespaceIndex != ns {
			continue
		}
		if r.NodeID.ServerIndex != 0 {
			continue // a node on another server cannot be read here
		}
		node := ua.NewNodeIDFromExpandedNodeID(r.NodeID)
		if r.NodeID.NamespaceURI != "" {
			i := slices.Index(w.ss.limits.namespaces, r.NodeID.NamespaceURI)
			if i < 0 || node.SetNamespace(uint16(i)) != nil {
				continue
			}
		}
		return node
	}
	return nil
}

// browse fetches the hierarchical forward references of nodes, in requests
// of at most MaxNodesPerBrowse, following continuation points.
func (w *walker) browse(ctx context.Context, nodes []*ua.NodeID) error {
	for start := 0; start < len(nodes); start += w.ss.limits.maxNodesPerBrowse {
		part := nodes[start:min(start+w.ss.limits.maxNodesPerBrowse, len(nodes))]
		req := &ua.BrowseRequest{
			View:          &ua.ViewDescription{ViewID: ua.NewTwoByteNodeID(0)},
			NodesToBrowse: make([]*ua.BrowseDescription, len(part)),
		}
		for i, n := range part {
			req.NodesToBrowse[i] = &ua.BrowseDescription{
				NodeID:          n,
				BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: refHierarchical,
				IncludeSubtypes: true,
				ResultMask:      browseResultMask,
			}
		}
		rctx, cancel := w.ss.request(ctx)
		res, err := w.ss.c.Browse(rctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("browse %d nodes: %w", len(part), err)
		}
		if len(res.Results) != len(part) {
			return fmt.Errorf("browse %d nodes: %d results", len(part), len(res.Results))
		}
		var pending []*browsed
		var points [][]byte
		for i, r := range res.Results {
			b := &browsed{status: ua.StatusBadUnexpectedError}
			if r != nil {
				b.status, b.refs = r.StatusCode, r.References
				if len(r.ContinuationPoint) > 0 && quality(r.StatusCode) != model.QualityBad {
					pending, points = append(pending, b), append(points, r.ContinuationPoint)
				}
			}
			w.children[part[i].String()] = b
		}
		if err := w.browseNext(ctx, pending, points); err != nil {
			return err
		}
	}
	return nil
}

// browseNext collects the rest of the references of partially browsed
// nodes, all of them in each BrowseNext request.
func (w *walker) browseNext(ctx context.Context, pending []*browsed, points [][]byte) error {
	for round := 0; len(points) > 0; round++ {
		if round == maxContinuationRounds {
			return fmt.Errorf("browse next: the server still has references after %d rounds", round)
		}
		rctx, cancel := w.ss.request(ctx)
		res, err := w.ss.c.BrowseNext(rctx, &ua.BrowseNextRequest{ContinuationPoints: points})
		cancel()
		if err != nil {
			return fmt.Errorf("browse next: %w", err)
		}
		if len(res.Results) != len(points) {
			return fmt.Errorf("browse next: %d results for %d continuation points", len(res.Results), len(points))
		}
		nextPending, nextPoints := pending[:0], points[:0]
		for i, r := range res.Results {
			b := pending[i]
			switch {
			case r == nil:
				b.status = ua.StatusBadUnexpectedError
			case quality(r.StatusCode) == model.QualityBad:
				b.status = r.StatusCode
			default:
				b.refs = append(b.refs, r.References...)
				if len(r.ContinuationPoint) > 0 {
					nextPending, nextPoints = append(nextPending, b), append(nextPoints, r.ContinuationPoint)
				}
			}
		}
		pending, points = nextPending, nextPoints
	}
	return nil
}
