package model

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TopicIndex answers as a map from topic to first index would, for sorted
// tags, shuffled ones, duplicates and nils.
func TestTopicIndex(t *testing.T) {
	var sorted []*TagMeta
	for i := 0; i < 300; i++ {
		sorted = append(sorted, &TagMeta{Topic: "acme/t" + strconv.Itoa(1000+i)})
	}
	shuffled := slices.Clone(sorted)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	withNils := append([]*TagMeta{nil}, shuffled...)
	withNils = append(withNils, nil, &TagMeta{Topic: shuffled[5].Topic}) // a duplicate, after the first
	for name, tags := range map[string][]*TagMeta{"sorted": sorted, "shuffled": shuffled, "nils and a duplicate": withNils, "empty": nil} {
		t.Run(name, func(t *testing.T) {
			want := map[string]int{}
			for i, m := range tags {
				if m == nil {
					continue
				}
				if _, ok := want[m.Topic]; !ok {
					want[m.Topic] = i
				}
			}
			ix := NewTopicIndex(tags)
			if name == "sorted" && ix.order != nil {
				t.Error("sorted tags got an order")
			}
			for topic, i := range want {
				if got, ok := ix.Find(topic); !ok || got != i {
					t.Errorf("Find(%q) = %d, %v; want %d", topic, got, ok, i)
				}
				if m := ix.Tag(topic); m != tags[i] {
					t.Errorf("Tag(%q) = %p, want %p", topic, m, tags[i])
				}
			}
			for _, topic := range []string{"", "acme/t0999", "acme/t1300", "acme/t1000x", "zzz"} {
				if i, ok := ix.Find(topic); ok || ix.Tag(topic) != nil {
					t.Errorf("Find(%q) = %d, want none", topic, i)
				}
			}
		})
	}
}
