package node

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/parley-im/parley/media"
)

// openMedia opens the media service (DataDir/media) and its listener.
// tlsConfig is the chat listener's, nil in plaintext mode.
func (n *Node) openMedia(tlsConfig *tls.Config) error {
	cfg := n.cfg
	mc := cfg.Media
	mc.Dir = filepath.Join(cfg.DataDir, "media")
	mc.Logger = cfg.Logger
	mc.OnStorageFatal = cfg.OnStorageFatal
	if n.analytics != nil && mc.OnUploaded == nil {
		mc.OnUploaded = mediaUploaded(n.analytics, time.Now)
	}
	if cfg.MediaS3.Endpoint != "" {
		st, err := media.NewS3Store(cfg.MediaS3)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = st.Check(ctx)
		cancel()
		if err != nil {
			return err
		}
		mc.Store = st
	}
	ln, err := net.Listen("tcp", cfg.MediaAddr)
	if err != nil {
		return &ListenError{Listener: "media", Addr: cfg.MediaAddr, Err: err}
	}
	if cfg.MediaURL == "" {
		scheme := "https://"
		if tlsConfig == nil {
			scheme = "http://"
		}
		n.cfg.MediaURL = scheme + ln.Addr().String()
	}
	mc.BaseURL = n.cfg.MediaURL
	svc, err := media.Open(mc)
	if err != nil {
		ln.Close()
		return err
	}
	n.media, n.mediaLn = svc, ln
	n.mediaHTTP = &http.Server{
		Handler:           svc.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug), // TLS handshake noise

	}
	if tlsConfig != nil {
		tc := tlsConfig.Clone()
		tc.MinVersion = tls.VersionTLS13
		n.mediaHTTP.TLSConfig = tc
	}
	return nil
}

// startMedia starts the media workers, sweeper and HTTP server.
func (n *Node) startMedia() {
	if n.media == nil {
		return
	}
	n.media.Start()
	n.mediaServed = make(chan error, 1)
	go func() {
		var err error
		if n.mediaHTTP.TLSConfig != nil {
			err = n.mediaHTTP.ServeTLS(n.mediaLn, "", "")
		} else {
			err = n.mediaHTTP.Serve(n.mediaLn)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		n.mediaServed <- err
	}()
}

// closeMedia stops the media endpoint (waiting for transfers until ctx
// ends) and then the service.
func (n *Node) closeMedia(ctx context.Context) error {
	if n.media == nil {
		return nil
	}
	var err error
	if n.mediaServed != nil {
		if err = n.mediaHTTP.Shutdown(ctx); err != nil {
			_ = n.mediaHTTP.Close()
		}
		err = errors.Join(err, <-n.mediaServed)
	} else {
		n.mediaLn.Close()
	}
	err = errors.Join(err, n.media.Close())
	n.media = nil
	return err
}

// Media returns the node's media service, or nil without one.
func (n *Node) Media() *media.Service { return n.media }

// MediaAddr returns the media endpoint's address, or nil without one.
func (n *Node) MediaAddr() net.Addr {
	if n.mediaLn == nil {
		return nil
	}
	return n.mediaLn.Addr()
}

// MediaURL returns the base URL of the media endpoint, or "".
func (n *Node) MediaURL() string {
	if n.mediaLn == nil {
		return ""
	}
	return n.cfg.MediaURL
}
