package opcua

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/model"
)

// secBrowseSim returns the shared sim server (see secStartSim) and a
// Config that reaches it.
func secBrowseSim(t *testing.T) (*sim.OPCUAServer, Config) {
	t.Helper()
	srv := secStartSim(t)
	dir := t.TempDir()
	secTrustSim(t, srv, dir)
	return srv, Config{Name: "ua1", Endpoint: srv.Endpoint(), PKIDir: dir, Timeout: 5 * time.Second}
}

func secBrowseAll(t *testing.T, cfg Config, start string, depth int) []BrowsedNode {
	t.Helper()
	var nodes []BrowsedNode
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Browse(ctx, cfg, start, depth, func(n BrowsedNode) error {
		nodes = append(nodes, n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

func secByPath(nodes []BrowsedNode) map[string]BrowsedNode {
	m := map[string]BrowsedNode{}
	for _, n := range nodes {
		m[n.BrowsePath] = n
	}
	return m
}

func TestBrowseSim(t *testing.T) {
	// An extra namespace shifts the sim's index: NodeID keeps the URI.
	srv, cfg := secBrowseSim(t)
	idx := srv.NamespaceIndex()
	if idx < 2 {
		t.Fatalf("sim namespace index %d", idx)
	}
	nodes := secBrowseAll(t, cfg, "", 0)
	got := secByPath(nodes)
	if len(got) != len(nodes) {
		t.Errorf("a node was visited twice: %+v", nodes)
	}
	ns := "nsu=" + sim.DefaultNamespaceURI + ";"
	nsIdx := "ns=" + strconv.Itoa(int(idx)) + ";"
	want := []BrowsedNode{
		{NodeID: ns + "s=Line2", NodeIDIndex: nsIdx + "s=Line2", BrowsePath: "/Objects/Line2", BrowseName: "Line2", DisplayName: "Line2", Class: "Object", Depth: 1},
		{NodeID: ns + "s=Line2.Filler1", NodeIDIndex: nsIdx + "s=Line2.Filler1", BrowsePath: "/Objects/Line2/Filler1", BrowseName: "Filler1", DisplayName: "Filler1", Class: "Object", Depth: 2},
		{NodeID: ns + "s=Line2.Filler1.Speed", NodeIDIndex: nsIdx + "s=Line2.Filler1.Speed", BrowsePath: "/Objects/Line2/Filler1/Speed", BrowseName: "Speed", DisplayName: "Speed", Class: "Variable", DataType: "Double", Access: "read", Depth: 3},
		{NodeID: ns + "s=Line2.Filler1.Count", NodeIDIndex: nsIdx + "s=Line2.Filler1.Count", BrowsePath: "/Objects/Line2/Filler1/Count", BrowseName: "Count", DisplayName: "Count", Class: "Variable", DataType: "Int32", Access: "read", Depth: 3},
		{NodeID: ns + "s=Line2.Filler1.Running", NodeIDIndex: nsIdx + "s=Line2.Filler1.Running", BrowsePath: "/Objects/Line2/Filler1/Running", BrowseName: "Running", DisplayName: "Running", Class: "Variable", DataType: "Boolean", Access: "read", Depth: 3},
		{NodeID: ns + "s=Line2.Filler1.Recipe", NodeIDIndex: nsIdx + "s=Line2.Filler1.Recipe", BrowsePath: "/Objects/Line2/Filler1/Recipe", BrowseName: "Recipe", DisplayName: "Recipe", Class: "Variable", DataType: "String", Access: "read", Depth: 3},
		{NodeID: ns + "s=Line2.Filler1.Temperatures", NodeIDIndex: nsIdx + "s=Line2.Filler1.Temperatures", BrowsePath: "/Objects/Line2/Filler1/Temperatures", BrowseName: "Temperatures", DisplayName: "Temperatures", Class: "Variable", DataType: "Double[]", Access: "read", Depth: 3},
		{NodeID: ns + "i=1001", NodeIDIndex: nsIdx + "i=1001", BrowsePath: "/Objects/Line2/Filler1/Fill level (ml)", BrowseName: "Fill level (ml)", DisplayName: "Fill level (ml)", Class: "Variable", DataType: "Float", Access: "read", Depth: 3},
		{NodeID: ns + "s=Line2.Filler2", NodeIDIndex: nsIdx + "s=Line2.Filler2", BrowsePath: "/Objects/Line2/Filler2", BrowseName: "Filler2", DisplayName: "Filler2", Class: "Object", Depth: 2},
		{NodeID: ns + "s=Line2.Filler2.Speed", NodeIDIndex: nsIdx + "s=Line2.Filler2.Speed", BrowsePath: "/Objects/Line2/Filler2/Speed", BrowseName: "Speed", DisplayName: "Speed", Class: "Variable", DataType: "Double", Access: "read", Depth: 3},
	}
	if len(nodes) != len(want) {
		t.Errorf("got %d nodes, want %d (the Server object and other standard nodes are left out):", len(nodes), len(want))
		for _, n := range nodes {
			t.Logf("  %+v", n)
		}
	}
	for i, w := range want {
		if i < len(nodes) && nodes[i] != w {
			t.Errorf("node %d:\n got %+v\nwant %+v", i, nodes[i], w)
		}
	}
	// Every browse path and node id is a valid model address.
	for _, n := range nodes {
		for _, a := range []string{n.NodeID, n.NodeIDIndex, n.BrowsePath} {
			if _, err := model.ParseAddress(a, model.AddressOptions{}); err != nil {
				t.Errorf("%q is not a model address: %v", a, err)
			}
		}
	}
}

func TestBrowseStartAndDepth(t *testing.T) {
	srv, cfg := secBrowseSim(t)
	cfg.SecurityPolicy, cfg.AcceptAnyServerCert, cfg.PKIDir = "None", true, ""

	paths := func(nodes []BrowsedNode) string {
		var ps []string
		for _, n := range nodes {
			ps = append(ps, n.BrowsePath+"@"+strconv.Itoa(n.Depth))
		}
		return strings.Join(ps, " ")
	}
	if got := paths(secBrowseAll(t, cfg, "", 1)); got != "/Objects/Line2@1" {
		t.Errorf("depth 1: %s", got)
	}
	if got := paths(secBrowseAll(t, cfg, "/Objects/Line2", 1)); got != "/Objects/Line2/Filler1@1 /Objects/Line2/Filler2@1" {
		t.Errorf("from a browse path: %s", got)
	}
	for _, start := range []string{"nsu=" + sim.DefaultNamespaceURI + ";s=Line2.Filler2", "ns=" + strconv.Itoa(int(srv.NamespaceIndex())) + ";s=Line2.Filler2"} {
		if got := paths(secBrowseAll(t, cfg, start, 0)); got != "/Objects/Line2/Filler2/Speed@1" {
			t.Errorf("from %s: %s", start, got)
		}
	}
	// Starting in namespace 0 below Objects shows the standard nodes.
	server := secByPath(secBrowseAll(t, cfg, "i=2253", 1))
	if n, ok := server["/Objects/Server/ServerStatus"]; !ok || n.NodeID != "i=2256" {
		t.Errorf("browse of the Server object: %+v", server)
	}

	for start, want := range map[string]string{
		"/Objects/Line9":         `no node "Line9" below /Objects`,
		"nsu=urn:nowhere;s=X":    `the server has no namespace "urn:nowhere"`,
		"holding:1":              "want a node id",
		"opc.tcp://host:4840/x":  "want a node id",
		"/Objects/" + "2:Line2x": `no node "2:Line2x"`,
	} {
		err := Browse(context.Background(), cfg, start, 0, func(BrowsedNode) error { return nil })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("start %q: err = %v, want %q", start, err, want)
		}
	}
}

func TestBrowseStopsOnVisitError(t *testing.T) {
	_, cfg := secBrowseSim(t)
	stop := errors.New("enough")
	visited := 0
	err := Browse(context.Background(), cfg, "", 0, func(BrowsedNode) error {
		visited++
		if visited == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || visited != 3 {
		t.Errorf("err = %v after %d visits", err, visited)
	}
}

func TestBrowseConfigProblems(t *testing.T) {
	err := Browse(context.Background(), Config{Endpoint: "opc.tcp://127.0.0.1:1", SecurityPolicy: "Basic128Rsa15"}, "", 0, func(BrowsedNode) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "allow_insecure_policies") {
		t.Errorf("err = %v", err)
	}
}

func TestSkeletonLoads(t *testing.T) {
	_, cfg := secBrowseSim(t)
	nodes := secBrowseAll(t, cfg, "", 0)
	var buf bytes.Buffer
	if err := Skeleton(&buf, nodes, "ua1"); err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadFiles([]model.File{{Name: "skeleton.yaml", Data: buf.Bytes()}})
	if err != nil {
		t.Fatalf("skeleton does not load: %v\n%s", err, buf.String())
	}
	if len(m.Assets) != 1 || m.Assets[0].Source != "ua1" {
		t.Fatalf("assets %+v", m.Assets)
	}
	tags := map[string]string{}
	for _, tag := range m.Assets[0].Tags {
		if tag.Address == nil || tag.Address.OPCUA == nil {
			t.Fatalf("tag %s has no OPC UA address", tag.Name)
		}
		tags[tag.Name] = tag.Address.OPCUA.Key()
	}
	ns := "nsu=" + sim.DefaultNamespaceURI + ";"
	want := map[string]string{
		"speed":         ns + "s=Line2.Filler1.Speed",
		"count":         ns + "s=Line2.Filler1.Count",
		"running":       ns + "s=Line2.Filler1.Running",
		"recipe":        ns + "s=Line2.Filler1.Recipe",
		"temperatures":  ns + "s=Line2.Filler1.Temperatures",
		"fill_level_ml": ns + "i=1001",
		"filler2_speed": ns + "s=Line2.Filler2.Speed",
	}
	if len(tags) != len(want) {
		t.Errorf("tags %v, want %v", tags, want)
	}
	for name, addr := range want {
		if tags[name] != addr {
			t.Errorf("tag %s = %q, want %q", name, tags[name], addr)
		}
	}
	for _, s := range []string{"# Double, read: /Objects/Line2/Filler1/Speed", "# Double[], read: /Objects/Line2/Filler1/Temperatures"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("skeleton lacks the comment %q:\n%s", s, buf.String())
		}
	}
}

func TestSkeletonEdgeCases(t *testing.T) {
	if err := Skeleton(&bytes.Buffer{}, []BrowsedNode{{Class: "Object", BrowseName: "Line"}}, "ua1"); err == nil {
		t.Error("a skeleton without variables")
	}
	nodes := []BrowsedNode{
		{Class: "Variable", BrowseName: "true", NodeID: "ns=2;s=A", BrowsePath: "/Objects/A/true"},
		{Class: "Variable", BrowseName: "1st", NodeID: "ns=2;s=B", BrowsePath: "/Objects/B/1st"},
		{Class: "Variable", BrowseName: "_x_", NodeID: "ns=2;s=C", BrowsePath: "/Objects/x"},
		{Class: "Variable", BrowseName: "x", NodeID: "ns=2;s=D", BrowsePath: "/Objects/x"},
		{Class: "Variable", BrowseName: "x", NodeID: "ns=2;s=E", BrowsePath: "/Objects/x"},
		{Class: "Variable", BrowseName: "Ω", NodeID: "ns=2;s=F"},
		{Class: "Variable", BrowseName: "brace", NodeID: "ns=2;s={odd}", BrowsePath: "/Objects/brace"},
		{Class: "Variable", BrowseName: "Speed\n# x: 1", NodeID: "ns=2;s=G\" #", BrowsePath: "/Objects/Speed\n# x: 1", DataType: "Double"},
	}
	var buf bytes.Buffer
	if err := Skeleton(&buf, nodes, `odd "source"`); err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadFiles([]model.File{{Name: "s.yaml", Data: buf.Bytes()}})
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	var names []string
	for _, tag := range m.Assets[0].Tags {
		names = append(names, tag.Name+"="+tag.Address.OPCUA.Key())
	}
	want := "true=ns=2;s=A 1st=ns=2;s=B x=ns=2;s=C objects_x=ns=2;s=D objects_x_2=ns=2;s=E tag=ns=2;s=F speed_x_1=ns=2;s=G\" #"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("tags %s\nwant %s\n%s", got, want, buf.String())
	}
	if m.Assets[0].Source != `odd "source"` {
		t.Errorf("source %q", m.Assets[0].Source)
	}
	if !strings.Contains(buf.String(), "{odd}") {
		t.Error("the node with { is not mentioned")
	}
}

func TestTagName(t *testing.T) {
	for in, want := range map[string]string{
		"Speed": "speed", "Fill level (ml)": "fill_level_ml", "__x__": "x", "ÄÖÜ": "tag",
		"a-b_c": "a-b_c", "Motor.Current": "motor_current", "": "tag",
	} {
		if got := tagName(in); got != want {
			t.Errorf("tagName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNodeIDOfNamespaceURI(t *testing.T) {
	w := &spaceWalk{ns: []string{"http://opcfoundation.org/UA/", "urn:a", "urn:b"}}
	e := &ua.ExpandedNodeID{NodeID: ua.NewStringNodeID(0, "Line2.Speed"), NamespaceURI: "urn:b"}
	if got := w.nodeIDOf(e).String(); got != "ns=2;s=Line2.Speed" {
		t.Errorf("nodeIDOf(nsu=urn:b) = %s", got)
	}
	plain := ua.NewNumericExpandedNodeID(1, 5)
	if got := w.nodeIDOf(plain).String(); got != "ns=1;i=5" {
		t.Errorf("nodeIDOf(ns=1;i=5) = %s", got)
	}
	if got := w.uriForm(ua.NewGUIDNodeID(2, "72962B91-FA75-4AE6-8D28-B404DC7DAF63")); got != "nsu=urn:b;g=72962b91-fa75-4ae6-8d28-b404dc7daf63" {
		t.Errorf("uriForm(guid) = %s", got)
	}
	if got := w.uriForm(ua.NewByteStringNodeID(7, []byte{1, 2})); got != "ns=7;b=AQI=" {
		t.Errorf("uriForm(unknown namespace) = %s", got)
	}
}

// Browse names and node ids come from the server as they are: none of them
// may make the skeleton fail to load, or bind a tag to another node than
// the one browsed.
func TestSkeletonHostileNames(t *testing.T) {
	for name, n := range map[string]BrowsedNode{
		"line separator in path": {BrowsePath: "/Objects/a\u2028x: 1"},
		"NEL in path":            {BrowsePath: "/Objects/a\u0085x: 1"},
		"control in path":        {BrowsePath: "/Objects/a\x01b"},
		"Latin-1 in path":        {BrowsePath: "/Objects/Temperatur \xb0C"},
		"control in data type":   {DataType: "nsu=urn:x\x02;i=5"},
		"BOM in path":            {BrowsePath: "/Objects/\ufeffa"},
		"brace and newline":      {NodeID: "ns=2;s={A}", BrowsePath: "/Objects/a\nx: 1"},
		"control in id":          {NodeID: "ns=2;s=A\x01"},
		"Latin-1 in id":          {NodeID: "ns=2;s=A\xff"},
		"separator in id":        {NodeID: "ns=2;s=A\u2028", BrowsePath: "-"},
		"empty string id":        {NodeID: "ns=2;s="},
		"spaces around id":       {NodeID: "ns=2;s= A "},
		"semicolon in URI":       {NodeID: "nsu=urn:a;b;s=A"},
		"guid":                   {NodeID: "ns=2;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"},
		"bytes":                  {NodeID: "ns=2;b=AQID"},
	} {
		n.Class, n.BrowseName = "Variable", "a"
		n.NodeID = cmp.Or(n.NodeID, "ns=2;s=A")
		n.NodeIDIndex = n.NodeID
		switch n.BrowsePath {
		case "":
			n.BrowsePath = "/Objects/a"
		case "-":
			n.BrowsePath = ""
		}
		ok := BrowsedNode{Class: "Variable", BrowseName: "ok", NodeID: "ns=2;s=OK", BrowsePath: "/Objects/ok"}
		var buf bytes.Buffer
		if err := Skeleton(&buf, []BrowsedNode{ok, n}, "ua1"); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		m, err := model.LoadFiles([]model.File{{Name: "s.yaml", Data: buf.Bytes()}})
		if err != nil {
			t.Errorf("%s: the skeleton does not load: %v\n%s", name, err, buf.String())
			continue
		}
		bound := false
		for _, tag := range m.Assets[0].Tags {
			key := tag.Address.OPCUA.Key()
			if key != ok.NodeID && key != n.NodeID {
				t.Errorf("%s: tag %s binds %q, which was not browsed\n%s", name, tag.Name, key, buf.String())
			}
			bound = bound || key == n.NodeID
		}
		if !bound && !strings.Contains(buf.String(), "bind it by browse path") {
			t.Errorf("%s: node %q neither bound nor mentioned\n%s", name, n.NodeID, buf.String())
		}
	}
}
