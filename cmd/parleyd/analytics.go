package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/parley-im/parley/internal/node"
)

// analyticsFlags choose and configure the analytics stream
// (docs/operations.md, "Analytics stream").
type analyticsFlags struct {
	sink, file, brokers, topic *string
}

// addAnalyticsFlags defines the analytics flags on fs, with their
// defaults from the environment.
func addAnalyticsFlags(fs *flag.FlagSet) *analyticsFlags {
	return &analyticsFlags{
		sink:    fs.String("analytics", env("PARLEY_ANALYTICS", node.AnalyticsFile), "analytics event `sink`: file (NDJSON under DATA/analytics), kafka or off; events hold ids, sizes and times only"),
		file:    fs.String("analytics-file", env("PARLEY_ANALYTICS_FILE", ""), "NDJSON `file` of the file sink, rotated at 64 MiB with 4 kept (default DATA/analytics/events.ndjson)"),
		brokers: fs.String("analytics-kafka-brokers", env("PARLEY_ANALYTICS_KAFKA_BROKERS", ""), "comma-separated Kafka seed `brokers` (host:port) of the kafka sink"),
		topic:   fs.String("analytics-kafka-topic", env("PARLEY_ANALYTICS_KAFKA_TOPIC", "parley-events"), "Kafka `topic` of the kafka sink, one record per event keyed by user id"),
	}
}

// config returns the node's analytics configuration, or the one problem
// with the flags.
func (f *analyticsFlags) config() (node.AnalyticsConfig, error) {
	c := node.AnalyticsConfig{Sink: *f.sink, File: *f.file}
	switch c.Sink {
	case node.AnalyticsFile, node.AnalyticsOff:
		if *f.brokers != "" {
			return c, fmt.Errorf("--analytics-kafka-brokers needs --analytics kafka")
		}
	case node.AnalyticsKafka:
		c.Kafka.Topic = *f.topic
		for _, b := range strings.Split(*f.brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				c.Kafka.Brokers = append(c.Kafka.Brokers, b)
			}
		}
		if len(c.Kafka.Brokers) == 0 {
			return c, fmt.Errorf("--analytics kafka needs --analytics-kafka-brokers")
		}
	default:
		return c, fmt.Errorf("--analytics %q: want file, kafka or off", c.Sink)
	}
	if *f.file != "" && c.Sink != node.AnalyticsFile {
		return c, fmt.Errorf("--analytics-file needs --analytics file")
	}
	return c, nil
}
