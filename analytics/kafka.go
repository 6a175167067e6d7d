package analytics

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaConfig configures a Kafka writer.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// Topic is where events go, one record per event, keyed by user id
	// (so one user's events keep their order in a partition). Default
	// "parley-events".
	Topic string
	// ClientID names this node to the brokers. Default "parleyd".
	ClientID string
}

// Kafka is a Writer that produces each event as a JSON record to a Kafka
// topic, with github.com/twmb/franz-go. A batch is produced and waited
// for (acks from all in-sync replicas, idempotently), within the
// pipeline's write timeout.
type Kafka struct {
	cl    *kgo.Client
	topic string
	recs  []*kgo.Record
}

// OpenKafka returns a Kafka writer. It does not contact the brokers: a
// broker down at start is found by the first Write.
func OpenKafka(cfg KafkaConfig) (*Kafka, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("analytics: kafka: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = "parley-events"
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "parleyd"
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.ClientID(cfg.ClientID),
		kgo.ProducerLinger(0), // the pipeline batches
		kgo.RecordRetries(3),
		kgo.DialTimeout(5*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("analytics: kafka: %w", err)
	}
	return &Kafka{cl: cl, topic: cfg.Topic}, nil
}

// Write implements Writer: it produces batch and waits for every record
// to be acknowledged, or for ctx to end.
func (k *Kafka) Write(ctx context.Context, batch []Event) error {
	k.recs = k.recs[:0]
	for i := range batch {
		v := batch[i].AppendJSON(nil)
		k.recs = append(k.recs, &kgo.Record{Key: binary.BigEndian.AppendUint64(nil, batch[i].User), Value: v})
	}
	if err := k.cl.ProduceSync(ctx, k.recs...).FirstErr(); err != nil {
		return fmt.Errorf("analytics: kafka produce: %w", err)
	}
	return nil
}

// Close implements Writer.
func (k *Kafka) Close() error {
	k.cl.Close()
	return nil
}
