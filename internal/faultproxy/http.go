package faultproxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Handler returns the HTTP API that controls p from another process (see
// the package doc). A bad request gets 400 and one line saying why.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /partition", func(w http.ResponseWriter, r *http.Request) {
		d, err := ParseDirection(r.URL.Query().Get("dir"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.Partition(d)
		p.writeStatus(w)
	})
	mux.HandleFunc("POST /heal", func(w http.ResponseWriter, _ *http.Request) {
		p.Heal()
		p.writeStatus(w)
	})
	mux.HandleFunc("POST /delay", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, fmt.Sprintf("faultproxy: delay %q, want a duration such as 50ms", r.URL.Query().Get("d")), http.StatusBadRequest)
			return
		}
		p.SetDelay(d)
		p.writeStatus(w)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		p.Reset()
		p.writeStatus(w)
	})
	mux.HandleFunc("POST /refuse", func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, fmt.Sprintf("faultproxy: on %q, want true or false", r.URL.Query().Get("on")), http.StatusBadRequest)
			return
		}
		p.Refuse(on)
		p.writeStatus(w)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		p.writeStatus(w)
	})
	return mux
}

func (p *Proxy) writeStatus(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p.Status())
}
