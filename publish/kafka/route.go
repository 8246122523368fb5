package kafka

import (
	"errors"
	"strings"
)

// route is a compiled Route: the filter's levels (nil: any path) and the
// asset type ("": any).
type route struct {
	levels []string
	typ    string
	topic  string
}

// CheckFilter checks an MQTT-style topic filter as routes use it: levels
// separated by '/', none of them empty; '+' stands for one whole level, '#'
// for the remaining levels (also none) and only as the last level.
func CheckFilter(filter string) error {
	_, err := parseFilter(filter)
	return err
}

func parseFilter(filter string) ([]string, error) {
	if filter == "" {
		return nil, errors.New("empty filter")
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "":
			return nil, errors.New("empty level (no leading, trailing or double '/')")
		case l == "#" && i != len(levels)-1:
			return nil, errors.New("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return nil, errors.New("'+' and '#' must stand alone in their level")
		}
	}
	return levels, nil
}

// matches reports whether a value of the tag at path, of an asset of type
// typ, takes this route.
func (r *route) matches(path, typ string) bool {
	return (r.typ == "" || r.typ == typ) && (r.levels == nil || r.match(path))
}

// match reports whether the UNS path matches the filter's levels. It does
// not allocate.
func (r *route) match(path string) bool {
	for i, l := range r.levels {
		if l == "#" {
			return true
		}
		if path == "" && i > 0 {
			return false // the path has fewer levels than the filter
		}
		level, rest, more := strings.Cut(path, "/")
		if l != "+" && l != level {
			return false
		}
		if !more {
			// The path ends here: a match if the filter ends too, or
			// continues only with '#'.
			return i == len(r.levels)-1 || i == len(r.levels)-2 && r.levels[i+1] == "#"
		}
		path = rest
	}
	return false // the path has more levels than the filter
}

// topicFor is the topic of the first route a value of the tag at path, of
// an asset of type typ, takes, else the default topic.
func (s *settings) topicFor(path, typ string) string {
	for i := range s.routes {
		if s.routes[i].matches(path, typ) {
			return s.routes[i].topic
		}
	}
	return s.Topic
}
