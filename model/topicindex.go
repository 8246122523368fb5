package model

import (
	"slices"
	"strings"
)

// TopicIndex finds tags by topic without a map: a binary search over the
// tags themselves when they are sorted by topic (a plan's are), or over an
// order of their indices otherwise. A map beside the tags would cost about
// 40 bytes per tag for lookups that only a few, rare paths make (reads of
// the status page, replay from a store, a reload). Nil entries in the tags
// are never found.
type TopicIndex struct {
	tags  []*TagMeta
	order []int32 // indices of the non-nil tags by topic; nil when tags are sorted and have no nil
}

// NewTopicIndex indexes tags, which it keeps (and does not copy).
func NewTopicIndex(tags []*TagMeta) TopicIndex {
	ix := TopicIndex{tags: tags}
	for i, t := range tags {
		if t != nil && (i == 0 || tags[i-1].Topic < t.Topic) {
			continue
		}
		// Not strictly sorted, or a nil: sort the indices instead.
		ix.order = make([]int32, 0, len(tags))
		for j, t := range tags {
			if t != nil {
				ix.order = append(ix.order, int32(j))
			}
		}
		slices.SortStableFunc(ix.order, func(a, b int32) int { return strings.Compare(tags[a].Topic, tags[b].Topic) })
		break
	}
	return ix
}

// Find returns the index in the tags of the tag at topic (the first one,
// if several share it).
func (ix TopicIndex) Find(topic string) (int, bool) {
	if ix.order == nil {
		return slices.BinarySearchFunc(ix.tags, topic, func(m *TagMeta, t string) int { return strings.Compare(m.Topic, t) })
	}
	k, ok := slices.BinarySearchFunc(ix.order, topic, func(i int32, t string) int { return strings.Compare(ix.tags[i].Topic, t) })
	if !ok {
		return 0, false
	}
	return int(ix.order[k]), true
}

// Tag returns the tag at topic, or nil.
func (ix TopicIndex) Tag(topic string) *TagMeta {
	if i, ok := ix.Find(topic); ok {
		return ix.tags[i]
	}
	return nil
}
