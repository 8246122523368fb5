package model

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// OPCUAAddress is a tag's binding to an OPC UA node. Either the node id
// fields (Namespace or NamespaceURI, IDType, ID) or BrowsePath are set.
// Namespace URIs and browse paths are resolved by the source at every
// connect, so a server that renumbers namespaces or nodes after a reboot is
// followed.
type OPCUAAddress struct {
	// Namespace is the namespace index (ns=N); used when NamespaceURI is "".
	Namespace uint16
	// NamespaceURI is the namespace (nsu=URI) to look up in the server's
	// namespace array at connect.
	NamespaceURI string
	// IDType is 'i' (numeric), 's' (string), 'g' (GUID) or 'b' (opaque,
	// base64); 0 for a browse path.
	IDType byte
	// ID is the identifier in canonical text: decimal for 'i', the string
	// for 's', lower-case 8-4-4-4-12 hex for 'g', standard base64 for 'b'.
	ID string
	// BrowsePath lists browse names from the Root folder, e.g.
	// [Objects Line1 Filler Speed] for /Objects/Line1/Filler/Speed. A
	// segment written N:Name also checks the namespace index N of the name.
	BrowsePath []string

	// Monitoring options for subscribe mode; zero means the source's
	// default. Tags sharing a node are read once: the source takes the
	// smallest sampling interval and deadband and the largest queue.
	Sampling  time.Duration
	QueueSize int
	// Deadband is an absolute data-change deadband applied by the server.
	Deadband float64
}

// Key returns the canonical binding key: the node id text in the form
// written (ns=2;s=X, nsu=urn:x;i=5) or the browse path (/Objects/A/B).
// Monitoring options are not part of it.
func (a *OPCUAAddress) Key() string {
	if a.IDType == 0 {
		var b strings.Builder
		for _, seg := range a.BrowsePath {
			b.WriteByte('/')
			b.WriteString(escapeSegment(seg))
		}
		return b.String()
	}
	return a.NodeIDText()
}

// NodeIDText is the node id in OPC UA text form, with nsu= when the address
// names its namespace by URI. Empty for a browse path.
func (a *OPCUAAddress) NodeIDText() string {
	if a.IDType == 0 {
		return ""
	}
	var b strings.Builder
	switch {
	case a.NamespaceURI != "":
		b.WriteString("nsu=")
		b.WriteString(a.NamespaceURI)
		b.WriteByte(';')
	case a.Namespace != 0:
		b.WriteString("ns=")
		b.WriteString(strconv.Itoa(int(a.Namespace)))
		b.WriteByte(';')
	}
	b.WriteByte(a.IDType)
	b.WriteByte('=')
	b.WriteString(a.ID)
	return b.String()
}

func escapeSegment(s string) string {
	if !strings.ContainsAny(s, `/\`) {
		return s
	}
	var b strings.Builder
	for _, c := range s {
		if c == '/' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// isOPCUAText reports whether an address is written in one of the OPC UA
// forms (as opposed to a Modbus AREA:NUMBER).
func isOPCUAText(s string) bool {
	for _, p := range []string{"ns=", "nsu=", "i=", "s=", "g=", "b=", "/"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

const opcuaForms = "ns=2;s=Name, ns=2;i=1001, ns=2;g=GUID, ns=2;b=BASE64, nsu=URI;s=Name, or a browse path /Objects/Folder/Name"

// parseOPCUA parses the OPC UA address forms: node ids (ns=N;T=ID,
// nsu=URI;T=ID, T=ID for namespace 0, with T one of i s g b) and browse
// paths (/Objects/A/B, with \ escaping / and \ inside a name).
func parseOPCUA(s string, opt AddressOptions) (*OPCUAAddress, error) {
	for _, k := range []struct {
		field string
		set   bool
	}{{FieldType, opt.Type != ""}, {FieldLength, opt.Length != 0}, {FieldOrder, opt.Order != ""}} {
		if k.set {
			return nil, addrErr(k.field, "%s only applies to Modbus addresses; an OPC UA node carries its own type (use datatype to convert the harmonized value)", k.field)
		}
	}
	a := &OPCUAAddress{}
	if strings.HasPrefix(s, "/") {
		segs, err := parseBrowsePath(s)
		if err != nil {
			return nil, err
		}
		a.BrowsePath = segs
	} else if err := parseNodeID(s, a); err != nil {
		return nil, err
	}
	switch {
	case opt.Sampling < 0:
		return nil, addrErr(FieldSampling, "sampling interval %v is negative", opt.Sampling)
	case opt.QueueSize < 0:
		return nil, addrErr(FieldQueueSize, "queue_size %d is negative", opt.QueueSize)
	case opt.Deadband < 0 || math.IsNaN(opt.Deadband) || math.IsInf(opt.Deadband, 0):
		return nil, addrErr(FieldDataDeadband, "data_change_deadband %v must be a finite number >= 0", opt.Deadband)
	}
	a.Sampling, a.QueueSize, a.Deadband = opt.Sampling, opt.QueueSize, opt.Deadband
	return a, nil
}

func parseNodeID(s string, a *OPCUAAddress) error {
	rest := s
	switch {
	case strings.HasPrefix(rest, "nsu="):
		uri, tail, ok := strings.Cut(rest[len("nsu="):], ";")
		if !ok {
			return addrErr(FieldAddress, "missing identifier after the namespace URI; write nsu=URI;s=Name")
		}
		if strings.TrimSpace(uri) == "" {
			return addrErr(FieldAddress, "empty namespace URI after nsu=")
		}
		a.NamespaceURI, rest = uri, tail
	case strings.HasPrefix(rest, "ns="):
		num, tail, ok := strings.Cut(rest[len("ns="):], ";")
		if !ok {
			return addrErr(FieldAddress, "missing identifier after the namespace index; write ns=%s;s=Name or ns=%s;i=1001", num, num)
		}
		n, err := parseDecimal(num, "namespace index", math.MaxUint16)
		if err != nil {
			return err
		}
		a.Namespace, rest = uint16(n), tail
	}
	if len(rest) < 2 || rest[1] != '=' {
		return addrErr(FieldAddress, "want an identifier i=, s=, g= or b= after the namespace; the forms are %s", opcuaForms)
	}
	id := rest[2:]
	a.IDType = rest[0]
	switch a.IDType {
	case 'i':
		n, err := parseDecimal(id, "numeric identifier", math.MaxUint32)
		if err != nil {
			return err
		}
		a.ID = strconv.Itoa(n)
	case 's':
		if id == "" {
			return addrErr(FieldAddress, "empty string identifier after s=")
		}
		if !utf8.ValidString(id) {
			return addrErr(FieldAddress, "string identifier is not valid UTF-8")
		}
		a.ID = id
	case 'g':
		g, ok := canonicalGUID(id)
		if !ok {
			return addrErr(FieldAddress, "GUID %q: want 8-4-4-4-12 hexadecimal digits, e.g. g=72962b91-fa75-4ae6-8d28-b404dc7daf63", id)
		}
		a.ID = g
	case 'b':
		raw, err := base64.StdEncoding.DecodeString(id)
		if err != nil || len(raw) == 0 {
			return addrErr(FieldAddress, "opaque identifier %q is not non-empty standard base64", id)
		}
		a.ID = base64.StdEncoding.EncodeToString(raw)
	default:
		return addrErr(FieldAddress, "unknown identifier type %q; use i= (numeric), s= (string), g= (GUID) or b= (opaque)", rest[:1])
	}
	return nil
}

func canonicalGUID(s string) (string, bool) {
	s = strings.Trim(s, "{}")
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return "", false
		}
	}
	return strings.ToLower(s), true
}

func parseBrowsePath(s string) ([]string, error) {
	var segs []string
	var cur strings.Builder
	escaped := false
	for _, c := range s[1:] {
		switch {
		case escaped:
			cur.WriteRune(c)
			escaped = false
		case c == '\\':
			escaped = true
		case c == '/':
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(c)
		}
	}
	if escaped {
		return nil, addrErr(FieldAddress, "browse path ends with a lone \\; write \\/ for a / inside a name and \\\\ for a \\")
	}
	segs = append(segs, cur.String())
	for i, seg := range segs {
		if seg == "" {
			return nil, addrErr(FieldAddress, "browse path %q has an empty name at segment %d; write /Objects/Folder/Name", s, i+1)
		}
	}
	if !utf8.ValidString(s) {
		return nil, addrErr(FieldAddress, "browse path is not valid UTF-8")
	}
	return segs, nil
}

// SplitQualified splits a browse path segment written N:Name into the
// namespace index and the name; ok is false when the segment has no valid
// N: prefix (then the whole segment is the name, in any namespace).
func SplitQualified(seg string) (ns uint16, name string, ok bool) {
	num, rest, found := strings.Cut(seg, ":")
	if !found || num == "" || rest == "" {
		return 0, seg, false
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		return 0, seg, false
	}
	return uint16(n), rest, true
}

// expandParams replaces {name} in an address with the value of the asset's
// param name, so one asset type can bind each instance to its own nodes
// (address: ns=2;s={node}.Speed). complete is false when a param has no
// value (a type's param without a default); the text is then unusable.
func expandParams(text string, lookup func(string) (Value, bool)) (out string, complete bool, err error) {
	if !strings.Contains(text, "{") {
		return text, true, nil
	}
	var b strings.Builder
	complete = true
	rest := text
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return "", false, fmt.Errorf("unclosed { at column %d; write {param} to insert an asset param", len(text)-len(rest)+i+1)
		}
		name := rest[i+1 : i+j]
		v, ok := lookup(name)
		switch {
		case !isIdent(name):
			return "", false, fmt.Errorf("{%s} does not name a param; write {param} with a param declared by the asset type", name)
		case !ok:
			return "", false, fmt.Errorf("{%s}: the asset type declares no param %q", name, name)
		case v.IsNull():
			complete = false
		}
		b.WriteString(v.String())
		rest = rest[i+j+1:]
	}
	return b.String(), complete, nil
}
