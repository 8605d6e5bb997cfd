// Command pocketbase-full is PocketBase v0.36.0's examples/base main (the program its
// releases ship), unchanged except for one thing: the records database (data.db) is opened
// with synchronous=FULL instead of PocketBase's default synchronous=NORMAL, through the
// documented pocketbase.Config.DBConnect hook ("Custom SQLite driver" in PocketBase's Go
// docs). Every other pragma, the driver (modernc.org/sqlite), the connection pools and
// auxiliary.db (request logs) stay exactly as core.DefaultDBConnect sets them.
//
// benches/bench_pocketbase.py builds it (go build, cached under bench-results/) and runs it
// beside the unmodified examples/base, to compare reactive's durable commits (WAL +
// synchronous=FULL, group commit) with a PocketBase whose commits are durable too.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"

	"github.com/pocketbase/dbx"
	"github.com/pocketbase/pocketbase"
	"github.com/pocketbase/pocketbase/apis"
	"github.com/pocketbase/pocketbase/core"
	"github.com/pocketbase/pocketbase/plugins/ghupdate"
	"github.com/pocketbase/pocketbase/plugins/jsvm"
	"github.com/pocketbase/pocketbase/plugins/migratecmd"
	"github.com/pocketbase/pocketbase/tools/hook"
	"github.com/pocketbase/pocketbase/tools/osutils"
)

// fullSyncPragmas are core.DefaultDBConnect's pragmas (v0.36.0) with synchronous(FULL).
const fullSyncPragmas = "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
	"&_pragma=journal_size_limit(200000000)&_pragma=synchronous(FULL)" +
	"&_pragma=foreign_keys(ON)&_pragma=temp_store(MEMORY)&_pragma=cache_size(-32000)"

func fullSyncConnect(dbPath string) (*dbx.DB, error) {
	if filepath.Base(dbPath) != "data.db" {
		return core.DefaultDBConnect(dbPath) // auxiliary.db (logs): PocketBase's default
	}
	return dbx.Open("sqlite", dbPath+fullSyncPragmas)
}

func main() {
	app := pocketbase.NewWithConfig(pocketbase.Config{DBConnect: fullSyncConnect})

	// Say which synchronous level both data.db pools run with (the benchmark checks it).
	app.OnServe().BindFunc(func(e *core.ServeEvent) error {
		var concurrent, nonconcurrent int
		if err := e.App.ConcurrentDB().NewQuery("PRAGMA synchronous").Row(&concurrent); err != nil {
			return err
		}
		if err := e.App.NonconcurrentDB().NewQuery("PRAGMA synchronous").Row(&nonconcurrent); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "data.db synchronous=%d/%d (2 = FULL)\n", concurrent, nonconcurrent)
		return e.Next()
	})

	// The rest is examples/base/main.go of v0.36.0, as it is.
	var hooksDir string
	app.RootCmd.PersistentFlags().StringVar(&hooksDir, "hooksDir", "", "the directory with the JS app hooks")
	var hooksWatch bool
	app.RootCmd.PersistentFlags().BoolVar(&hooksWatch, "hooksWatch", true, "auto restart the app on pb_hooks file change; it has no effect on Windows")
	var hooksPool int
	app.RootCmd.PersistentFlags().IntVar(&hooksPool, "hooksPool", 15, "the total prewarm goja.Runtime instances for the JS app hooks execution")
	var migrationsDir string
	app.RootCmd.PersistentFlags().StringVar(&migrationsDir, "migrationsDir", "", "the directory with the user defined migrations")
	var automigrate bool
	app.RootCmd.PersistentFlags().BoolVar(&automigrate, "automigrate", true, "enable/disable auto migrations")
	var publicDir string
	app.RootCmd.PersistentFlags().StringVar(&publicDir, "publicDir", defaultPublicDir(), "the directory to serve static files")
	var indexFallback bool
	app.RootCmd.PersistentFlags().BoolVar(&indexFallback, "indexFallback", true, "fallback the request to index.html on missing static path, e.g. when pretty urls are used with SPA")

	app.RootCmd.ParseFlags(os.Args[1:])

	jsvm.MustRegister(app, jsvm.Config{
		MigrationsDir: migrationsDir,
		HooksDir:      hooksDir,
		HooksWatch:    hooksWatch,
		HooksPoolSize: hooksPool,
	})
	migratecmd.MustRegister(app, app.RootCmd, migratecmd.Config{
		TemplateLang: migratecmd.TemplateLangJS,
		Automigrate:  automigrate,
		Dir:          migrationsDir,
	})
	ghupdate.MustRegister(app, app.RootCmd, ghupdate.Config{})
	app.OnServe().Bind(&hook.Handler[*core.ServeEvent]{
		Func: func(e *core.ServeEvent) error {
			if !e.Router.HasRoute(http.MethodGet, "/{path...}") {
				e.Router.GET("/{path...}", apis.Static(os.DirFS(publicDir), indexFallback))
			}
			return e.Next()
		},
		Priority: 999,
	})

	if err := app.Start(); err != nil {
		log.Fatal(err)
	}
}

func defaultPublicDir() string {
	if osutils.IsProbablyGoRun() {
		return "./pb_public"
	}
	return filepath.Join(os.Args[0], "../pb_public")
}
