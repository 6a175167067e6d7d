package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/parley-im/parley/internal/node"
)

// TestAnalyticsFlags: each sink's flags give its configuration, and a
// mismatched set is refused with one line naming the flag.
func TestAnalyticsFlags(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		sink    string
		brokers []string
		topic   string
		err     string
	}{
		{nil, node.AnalyticsFile, nil, "", ""},
		{[]string{"--analytics", "off"}, node.AnalyticsOff, nil, "", ""},
		{[]string{"--analytics", "kafka", "--analytics-kafka-brokers", " k1:9092, ,k2:9092"}, node.AnalyticsKafka, []string{"k1:9092", "k2:9092"}, "parley-events", ""},
		{[]string{"--analytics", "kafka", "--analytics-kafka-brokers", "k1:9092", "--analytics-kafka-topic", "ev"}, node.AnalyticsKafka, []string{"k1:9092"}, "ev", ""},
		{[]string{"--analytics", "kafka"}, "", nil, "", "--analytics kafka needs --analytics-kafka-brokers"},
		{[]string{"--analytics-kafka-brokers", "k1:9092"}, "", nil, "", "--analytics-kafka-brokers needs --analytics kafka"},
		{[]string{"--analytics", "off", "--analytics-file", "/tmp/e.ndjson"}, "", nil, "", "--analytics-file needs --analytics file"},
		{[]string{"--analytics", "s3"}, "", nil, "", `--analytics "s3": want file, kafka or off`},
	} {
		fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := addAnalyticsFlags(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		c, err := f.config()
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.args, err, tt.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case c.Sink != tt.sink || !slices.Equal(c.Kafka.Brokers, tt.brokers) || c.Kafka.Topic != tt.topic:
			t.Errorf("%q: sink %q brokers %q topic %q, want %q %q %q", tt.args, c.Sink, c.Kafka.Brokers, c.Kafka.Topic, tt.sink, tt.brokers, tt.topic)
		}
	}
}
