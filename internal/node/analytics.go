package node

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/protocol/pb"
)

// Analytics sinks (AnalyticsConfig.Sink).
const (
	AnalyticsFile  = "file"  // NDJSON files under the data directory (the default)
	AnalyticsKafka = "kafka" // a Kafka topic
	AnalyticsOff   = "off"   // no analytics stream
)

// AnalyticsConfig configures the node's analytics stream: metadata
// events (ids, sizes and times, never a body, a phone number or a name)
// from the shards and the media service, batched to a sink without ever
// slowing the chat down (package analytics).
type AnalyticsConfig struct {
	// Sink is AnalyticsFile, AnalyticsKafka or AnalyticsOff; "" means
	// AnalyticsFile.
	Sink string
	// File is the NDJSON file of the file sink, rotated at FileMaxBytes
	// with FileKeep older files kept; "" means
	// DataDir/analytics/events.ndjson, 0 means 64 MiB and 4 files.
	File         string
	FileMaxBytes int64
	FileKeep     int
	// Kafka configures the Kafka sink; Brokers is required with it.
	Kafka analytics.KafkaConfig
	// Pipeline tunes the batching (buffer, batch size, flush interval,
	// write timeout); Writer and Logger are filled in by the node.
	Pipeline analytics.Config
}

func (c *AnalyticsConfig) validate() error {
	switch c.Sink {
	case "", AnalyticsFile, AnalyticsOff:
	case AnalyticsKafka:
		if len(c.Kafka.Brokers) == 0 {
			return errors.New("node: the kafka analytics sink needs brokers")
		}
	default:
		return fmt.Errorf("node: analytics sink %q, want %s, %s or %s", c.Sink, AnalyticsFile, AnalyticsKafka, AnalyticsOff)
	}
	return nil
}

// openAnalytics starts the analytics pipeline of cfg; nil with the sink
// off.
func openAnalytics(cfg Config) (*analytics.Pipeline, error) {
	ac := cfg.Analytics
	var w analytics.Writer
	switch ac.Sink {
	case AnalyticsOff:
		return nil, nil
	case AnalyticsKafka:
		k, err := analytics.OpenKafka(ac.Kafka)
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		w = k
	default:
		path := ac.File
		if path == "" {
			path = filepath.Join(cfg.DataDir, "analytics", "events.ndjson")
		}
		f, err := analytics.OpenFile(path, ac.FileMaxBytes, ac.FileKeep)
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		w = f
	}
	pc := ac.Pipeline
	pc.Writer, pc.Logger = w, cfg.Logger
	p, err := analytics.New(pc)
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	return p, nil
}

// mediaUploaded is the media service's OnUploaded hook: a media_uploaded
// event.
func mediaUploaded(p *analytics.Pipeline, now func() time.Time) func(user uint64, size int64, typ pb.ContentType) {
	return func(user uint64, size int64, _ pb.ContentType) {
		p.Emit(analytics.Event{Type: analytics.TypeMediaUploaded, TimeMS: now().UnixMilli(), User: user, Size: size})
	}
}
