package loadtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// mediaScenario moves media through the node's HTTPS endpoint (spec.md
// section 14): the even device of each pair asks for an upload slot over
// the chat connection (MEDIA_UPLOAD), PUTs --media-size fresh bytes to
// the URL, and its peer asks for a download URL (MEDIA_DOWNLOAD), GETs
// the bytes and checks their size and SHA-256; then the next file, until
// --duration or --media-count files. The bytes come from a seeded
// generator, streamed both ways, so a worker holds no file in memory and
// no two files are alike (the server would deduplicate them). Figures:
// upload and download latency (slot or URL request included), throughput
// each way, the server's CPU per MiB.
var mediaScenario = Scenario{
	Name:    "media",
	Summary: "upload (slot + PUT) and download (URL + GET) --media-size files through the HTTPS endpoint, checked by SHA-256",
	Steps: func(cfg *Config) []Step {
		return []Step{
			stepRegister(true),
			stepConnect("connect", nil, 0),
			{
				Name:        "transfers",
				Worker:      func(ctx context.Context, w *Worker) error { return w.mediaTraffic(ctx) },
				Timed:       true,
				MeasureFrom: true,
				MeasureTo:   true,
			},
			stepClose(),
		}
	},
}

// mediaStats are a worker's media counters.
type mediaStats struct {
	up, down durationRecorder
}

// mediaTraffic runs every uploader's loop until the run's end.
func (w *Worker) mediaTraffic(ctx context.Context) error {
	cfg := &w.spec.Config
	end := time.Now().Add(cfg.Duration)
	tr := &http.Transport{
		DialContext:         w.dialer.DialContext,
		TLSClientConfig:     w.tlsConfig,
		MaxIdleConnsPerHost: len(w.devices),
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Minute}
	var wg sync.WaitGroup
	errs := make(chan error, len(w.devices))
	for _, d := range w.devices {
		if d.peer != nil && d.index%2 == 0 {
			wg.Go(func() { errs <- d.mediaLoop(ctx, client, end) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// mediaLoop uploads files from d and downloads each from its peer.
func (d *device) mediaLoop(ctx context.Context, client *http.Client, end time.Time) error {
	w, cfg := d.w, &d.w.spec.Config
	size := int64(cfg.MediaSize)
	for i := 0; i < cfg.MediaCount && time.Now().Before(end); i++ {
		if ctx.Err() != nil {
			return nil
		}
		seed := mediaSeed(w.spec.RunID, d.index, i)
		h := sha256.New()
		_, _ = io.Copy(h, mediaBytes(seed, size))
		sum := h.Sum(nil)

		start := time.Now()
		id, err := d.upload(ctx, client, seed, sum, size, end)
		if errors.Is(err, errPastEnd) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("media: device %d upload %d: %w", d.index, i, err)
		}
		w.media.up.record(time.Since(start))
		w.stats.mediaUploads.Add(1)

		start = time.Now()
		if err := d.peer.download(ctx, client, id, sum, size, end); errors.Is(err, errPastEnd) {
			return nil
		} else if err != nil {
			return fmt.Errorf("media: device %d download %d: %w", d.peer.index, i, err)
		}
		w.media.down.record(time.Since(start))
		w.stats.mediaDownloads.Add(1)
	}
	return nil
}

// upload asks for a slot and PUTs the file; it returns the media id.
func (d *device) upload(ctx context.Context, client *http.Client, seed [32]byte, sum []byte, size int64, end time.Time) ([]byte, error) {
	r, err := d.mediaRequest(ctx, end, protocol.KindMediaUpload, func(rid uint32) proto.Message {
		return &pb.MediaUpload{Rid: rid, Type: pb.ContentType_CONTENT_DOCUMENT, Size: uint64(size), Sha256: sum}
	})
	if err != nil {
		return nil, err
	}
	var slot pb.MediaUploadSlot
	if err := codec.ParseProto(r.body, &slot); err != nil {
		return nil, err
	}
	if slot.Stored {
		return slot.Id, nil // the server had these bytes already
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, slot.Url, mediaBytes(seed, size))
		if err != nil {
			return nil, err
		}
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		d.w.stats.mediaBytesUp.Add(size)
		switch {
		case resp.StatusCode == http.StatusOK:
			return slot.Id, nil
		case resp.StatusCode == http.StatusServiceUnavailable && attempt < 20:
			d.w.stats.mediaRetries.Add(1)
			if err := sleepCtx(ctx, retryAfter(resp)); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("PUT: %s (Parley-Error %s): %s", resp.Status, resp.Header.Get("Parley-Error"), bytes.TrimSpace(msg))
		}
	}
}

// download asks for the download URL of id, GETs it and checks the
// bytes against what was uploaded.
func (d *device) download(ctx context.Context, client *http.Client, id, sum []byte, size int64, end time.Time) error {
	r, err := d.mediaRequest(ctx, end, protocol.KindMediaDownload, func(rid uint32) proto.Message {
		return &pb.MediaDownload{Rid: rid, Id: id}
	})
	if err != nil {
		return err
	}
	var u pb.MediaDownloadUrl
	if err := codec.ParseProto(r.body, &u); err != nil {
		return err
	}
	if u.Size != uint64(size) || !bytes.Equal(u.Sha256, sum) {
		d.w.stats.mediaCorrupt.Add(1)
		d.w.logAnomaly("download URL names another size or SHA-256", d, u.Size, uint64(size))
		return nil
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < 20 {
			resp.Body.Close()
			d.w.stats.mediaRetries.Add(1)
			if err := sleepCtx(ctx, retryAfter(resp)); err != nil {
				return err
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return fmt.Errorf("GET: %s (Parley-Error %s): %s", resp.Status, resp.Header.Get("Parley-Error"), bytes.TrimSpace(msg))
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		d.w.stats.mediaBytesDown.Add(n)
		if err != nil {
			return fmt.Errorf("GET body: %w", err)
		}
		if n != size || !bytes.Equal(h.Sum(nil), sum) {
			d.w.stats.mediaCorrupt.Add(1)
			d.w.logAnomaly("downloaded bytes differ from the upload", d, uint64(n), uint64(size))
		}
		return nil
	}
}

// errPastEnd ends a transfer loop whose wait for the server would run
// past the end of the run.
var errPastEnd = errors.New("media: past the end of the run")

// mediaRequest sends a media request on d's connection, waiting out
// RATE_LIMITED and OVERLOADED answers ([S-14-3]) unless the wait would
// pass end (errPastEnd); other errors fail.
func (d *device) mediaRequest(ctx context.Context, end time.Time, kind protocol.Kind, fill func(rid uint32) proto.Message) (reply, error) {
	for attempt := 0; ; attempt++ {
		s := d.session()
		if s == nil {
			return reply{}, errors.New("not connected")
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := s.request(rctx, kind, fill)
		cancel()
		if err != nil {
			return reply{}, err
		}
		if r.kind != protocol.KindError {
			return r, nil
		}
		var e pb.Error
		_ = codec.ParseProto(r.body, &e)
		if (e.Code != protocol.CodeRateLimited && e.Code != protocol.CodeOverloaded) || attempt == 50 {
			return reply{}, fmt.Errorf("%v: %v %s", kind, e.Code, e.Message)
		}
		d.w.stats.mediaRetries.Add(1)
		wait := max(10*time.Millisecond, time.Duration(e.RetryAfterMs)*time.Millisecond)
		if time.Now().Add(wait).After(end) {
			return reply{}, errPastEnd
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return reply{}, err
		}
	}
}

// retryAfter reads Retry-After in seconds; 100 ms when absent.
func retryAfter(resp *http.Response) time.Duration {
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 100 * time.Millisecond
}

// mediaSeed names file i of account index in this run.
func mediaSeed(runID string, index, i int) [32]byte {
	var seed [32]byte
	copy(seed[:16], runID)
	binary.BigEndian.PutUint64(seed[16:], uint64(index))
	binary.BigEndian.PutUint64(seed[24:], uint64(i))
	return seed
}

// mediaBytes streams the size bytes of the file seed names.
func mediaBytes(seed [32]byte, size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seed), size)
}

// assembleMedia adds a media run's figures to the result.
func (c *coordinator) assembleMedia() {
	cfg, r := c.cfg, c.res
	if cfg.Scenario != mediaScenario.Name {
		return
	}
	up, down := newHist(), newHist()
	for _, w := range c.workers {
		if h, err := decodeHist(w.result.MediaUp); err == nil {
			up.Merge(h)
		}
		if h, err := decodeHist(w.result.MediaDown); err == nil {
			down.Merge(h)
		}
	}
	t := r.Counters
	r.MediaSize = cfg.MediaSize
	r.MediaUploads, r.MediaDownloads, r.MediaCorrupt = t.MediaUploads, t.MediaDownloads, t.MediaCorrupt
	r.MediaUploadLatency, r.MediaDownloadLatency = percentiles(up), percentiles(down)
	if c.toAt.IsZero() || c.fromAt.IsZero() {
		return
	}
	secs := c.toAt.Sub(c.fromAt).Seconds()
	bu := float64(c.toCount.MediaBytesUp - c.fromCount.MediaBytesUp)
	bd := float64(c.toCount.MediaBytesDown - c.fromCount.MediaBytesDown)
	r.MediaUpMiBps, r.MediaDownMiBps = bu/secs/(1<<20), bd/secs/(1<<20)
	r.LoadCPUSeconds = float64(c.toCount.CPUMicros-c.fromCount.CPUMicros) / 1e6
	if c.fromSrv != nil && c.toSrv != nil {
		r.ServerCPUSeconds = c.toSrv["process_cpu_seconds_total"] - c.fromSrv["process_cpu_seconds_total"]
		if bu+bd > 0 {
			r.ServerCPUPerMiBMS = r.ServerCPUSeconds / ((bu + bd) / (1 << 20)) * 1e3
		}
	}
}
