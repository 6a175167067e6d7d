// Command parley-peers measures the peers a user would otherwise pick
// against the same work parley-load gives Parley: mosquitto (MQTT 3.1.1,
// QoS 1) and nats-server (core NATS), from Debian's packages, each started
// here on loopback with TLS 1.3 and a fresh self-signed certificate.
//
//	parley-peers --peer mosquitto --scenario idle --conns 10000
//	parley-peers --peer nats --scenario pairs --conns 1000 --inflight 10
//	parley-peers --peer mosquitto --scenario pairs --rate 20000
//
// The workload mirrors parley-load's: pairs of clients each subscribed to
// its own topic and publishing to its peer's, 20-byte bodies carrying the
// intended and actual send times, at most --inflight publishes
// unacknowledged per client (MQTT: until PUBACK; NATS, which has no
// publish acknowledgement: until the peer received it), latency from the
// intended send time (the scheduled time of a publish the server held
// back, else the write's: internal/pace) into an HdrHistogram. The clients are minimal raw
// protocol implementations over crypto/tls, as lean as parley-load's, so
// the load generator costs the same on the shared cores. Server memory
// and CPU come from /proc.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley-peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.peer, "peer", "mosquitto", "`peer`: mosquitto or nats")
	fs.StringVar(&cfg.scenario, "scenario", "pairs", "`scenario`: idle or pairs")
	fs.IntVar(&cfg.conns, "conns", 1000, "connections")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "traffic duration")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "start of the traffic left out of the figures")
	fs.IntVar(&cfg.rate, "rate", 0, "total messages per second (0: flat out)")
	fs.IntVar(&cfg.inflight, "inflight", 10, "unacknowledged publishes per client")
	fs.DurationVar(&cfg.settle, "settle", 5*time.Second, "idle: wait before reading the server's memory")
	jsonOut := fs.Bool("json", false, "print the result as one JSON object")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := measure(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "parley-peers:", err)
		return 2
	}
	if *jsonOut {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	} else {
		res.writeText(stdout)
	}
	return 0
}
