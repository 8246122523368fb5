package sparkplug

import (
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// BenchmarkEncodeMetric measures what one tag update costs on its way into
// a DDATA: the Fanout's encoding (AppendPoint) and the sink's framing with
// the alias or the name. bytes/metric is the metric's size in the payload.
//
//	go test -run '^$' -bench EncodeMetric -benchmem ./publish/sparkplug
func BenchmarkEncodeMetric(b *testing.B) {
	tags := testTags()
	a, _ := loadAliases("")
	ts := buildTagset(tags, "acme/munich", "munich", "gw1", a)
	at := time.UnixMilli(1795455787390)
	points := []model.Point{
		{Meta: tags[0], Value: model.FloatValue(120.5), Quality: model.QualityGood, Time: at},
		{Meta: tags[1], Value: model.IntValue(-12), Quality: model.QualityGood, Time: at},
		{Meta: tags[3], Value: model.BoolValue(true), Quality: model.QualityGood, Time: at},
		{Meta: tags[5], Value: model.UintValue(4000000000), Quality: model.QualityGood, Time: at},
	}
	for _, aliases := range []bool{true, false} {
		name := "alias"
		if !aliases {
			name = "name"
		}
		b.Run(name, func(b *testing.B) {
			s := &Sink{cfg: &settings{Config: Config{NoAliases: !aliases}}}
			var body, out []byte
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				p := &points[n%len(points)]
				body = Encoder.AppendPoint(body[:0], p)
				out = s.appendDataMetric(out[:0], ts.byTopic[p.Meta.Topic], body[1:], false)
				n++
			}
			// Average size over the point kinds.
			size := 0
			for i := range points {
				body = Encoder.AppendPoint(body[:0], &points[i])
				size += len(s.appendDataMetric(nil, ts.byTopic[points[i].Meta.Topic], body[1:], false))
			}
			b.ReportMetric(float64(size)/float64(len(points)), "bytes/metric")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "metrics/s")
		})
	}
}
