package cluster

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapSlog is a zapcore.Core that writes etcd's zap logs to an slog.Logger
// at min or above, with component=etcd.
type zapSlog struct {
	l     *slog.Logger
	min   slog.Level
	attrs []any
}

// newZap returns a zap logger that writes to l what is at min or above.
func newZap(l *slog.Logger, min slog.Level) *zap.Logger {
	return zap.New(&zapSlog{l: l.With("component", "etcd"), min: min})
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// Enabled implements zapcore.LevelEnabler.
func (z *zapSlog) Enabled(l zapcore.Level) bool {
	lv := slogLevel(l)
	return lv >= z.min && z.l.Enabled(context.Background(), lv)
}

// With implements zapcore.Core.
func (z *zapSlog) With(fields []zapcore.Field) zapcore.Core {
	c := *z
	c.attrs = append(append([]any(nil), z.attrs...), fieldAttrs(fields)...)
	return &c
}

// Check implements zapcore.Core.
func (z *zapSlog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if z.Enabled(e.Level) {
		return ce.AddCore(e, z)
	}
	return ce
}

// Write implements zapcore.Core: one slog record per entry.
func (z *zapSlog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	args := append(append([]any(nil), z.attrs...), fieldAttrs(fields)...)
	if e.LoggerName != "" {
		args = append(args, "logger", e.LoggerName)
	}
	z.l.Log(context.Background(), slogLevel(e.Level), e.Message, args...)
	return nil
}

// Sync implements zapcore.Core; slog handlers have nothing to flush.
func (z *zapSlog) Sync() error { return nil }

// fieldAttrs turns zap fields into slog key-value pairs.
func fieldAttrs(fields []zapcore.Field) []any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}
