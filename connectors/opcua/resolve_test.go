package opcua

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// Bindings that do not resolve are BAD with the reason's status code and
// logged once, naming what failed; the other tags run.
func TestResolveProblems(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	good := srv.AddVariable(dir+"/V", 5.0)
	idx := srv.NamespaceIndex()
	missingNode := fmt.Sprintf("ns=%d;s=%s.Nope", idx, dir)
	badURI := "nsu=urn:unsgate:nope;s=X"
	badSegment := "/Objects/" + dir + "/Nope"
	badFolder := "/Objects/NoSuchFolder/V"
	qualified := fmt.Sprintf("/Objects/%d:%s/%d:V", idx, dir, idx)
	wrongNS := fmt.Sprintf("/Objects/%d:%s/V", idx+7, dir)
	tags := []Tag{tag(t, good), tag(t, missingNode), tag(t, badURI), tag(t, badSegment), tag(t, badFolder), tag(t, qualified), tag(t, wrongNS)}
	want := map[string]ua.StatusCode{
		missingNode: ua.StatusBadNodeIDUnknown,
		badURI:      ua.StatusBadNodeIDUnknown,
		badSegment:  ua.StatusBadNoMatch,
		badFolder:   ua.StatusBadNoMatch,
		wrongNS:     ua.StatusBadNoMatch,
	}
	for _, mode := range []Mode{ModeSubscribe, ModePoll} {
		t.Run(mode.String(), func(t *testing.T) {
			var logs logBuffer
			cfg := testConfig(srv.Endpoint(), tags...)
			cfg.Mode, cfg.Logger = mode, logs.logger()
			src := mustNew(t, cfg)
			for session := range 2 {
				rec := newRecorder()
				r := run(t, src, rec.emit)
				rec.waitValue(t, good, model.QualityGood, model.FloatValue(5))
				rec.waitValue(t, qualified, model.QualityGood, model.FloatValue(5))
				for key, status := range want {
					rec.wait(t, key+" BAD with "+status.Error(), 5*time.Second, func() bool {
						s, ok := rec.latest[key]
						return ok && s.Quality == model.QualityBad && s.Status == uint32(status) && s.Value.IsNull()
					})
				}
				if st := src.Stats(); st.Unresolved != 4 {
					t.Fatalf("session %d: %d unresolved, want 4 (the URI and three paths)", session, st.Unresolved)
				}
				if err := r.stop(t); err != nil {
					t.Fatal(err)
				}
			}
			out := logs.String()
			for _, w := range []string{
				`namespace_uri=urn:unsgate:nope`,
				`path=` + badSegment + ` segment=3 name=Nope under=/Objects/` + dir,
				`path=` + badFolder + ` segment=2 name=NoSuchFolder under=/Objects`,
			} {
				if n := strings.Count(out, "level=WARN"); n == 0 || !strings.Contains(out, w) {
					t.Errorf("log lacks a warning with %q:\n%s", w, out)
				}
			}
			// Logged when new, not again at the next session.
			if n := strings.Count(out, "level=WARN msg=\"namespace URI not in"); n != 1 {
				t.Errorf("the unknown URI was warned about %d times over two sessions, want 1", n)
			}
		})
	}
}

// Paths sharing prefixes are resolved one level at a time, each node
// browsed once, all nodes of a level in one Browse request.
func TestBrowseSharedPrefixes(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	tap := startTap(t, srv.Endpoint())
	var tags []Tag
	var keys []string
	for line := 1; line <= 4; line++ {
		for cell := 1; cell <= 5; cell++ {
			srv.AddVariable(fmt.Sprintf("%s/Line%d/Cell%d/Speed", dir, line, cell), float64(10*line+cell))
			k := fmt.Sprintf("/Objects/%s/Line%d/Cell%d/Speed", dir, line, cell)
			keys, tags = append(keys, k), append(tags, tag(t, k))
		}
	}
	rec := newRecorder()
	run(t, mustNew(t, testConfig(tap.endpoint(), tags...)), rec.emit)
	for i, k := range keys {
		rec.waitValue(t, k, model.QualityGood, model.FloatValue(float64(10*(i/5+1)+i%5+1)))
	}
	browses := messagesOf[*ua.BrowseRequest](tap)
	var sizes []int
	for _, b := range browses {
		sizes = append(sizes, len(b.NodesToBrowse))
		for _, d := range b.NodesToBrowse {
			if d.BrowseDirection != ua.BrowseDirectionForward || !d.IncludeSubtypes || d.ReferenceTypeID.IntID() != 33 {
				t.Fatalf("browse description %+v: want forward hierarchical references with subtypes", d)
			}
		}
	}
	// Root; Objects; the folder; 4 lines; 20 cells.
	if fmt.Sprint(sizes) != "[1 1 1 4 20]" {
		t.Fatalf("Browse requests of %v nodes, want [1 1 1 4 20]", sizes)
	}
}
