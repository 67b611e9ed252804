defmodule Mix.Tasks.Compile.PsPort do
  @shortdoc "Builds the ps_port helper with `go build` into priv/"

  @moduledoc """
  Builds the Go helper `ps_port` into the application's `priv/ps_port`, and
  beside it `priv/ps_port_node`, node mode, which `ps_port node` execs (a
  binary of its own so that port mode, started once per child, does not
  link and initialise node mode's packages), and `priv/ps_port_lean`, port
  mode without cgroups, which the shim runs for an isolated child without
  a cgroup (it starts about 1 ms sooner: it does not link the cgroup
  backend).

  Runs, in the repository root (the directory above `elixir_shim/` that holds
  `go.mod`, or `$PS_PORT_SRC` when set):

      go build -trimpath -ldflags=-s -o <app>/priv/ ./cmd/ps_port ./cmd/ps_port_lean ./cmd/ps_port_node

  `GOOS`, `GOARCH`, `GOARM` and `CGO_ENABLED` are taken from the environment so
  cross builds (Nerves and the like) work; `CGO_ENABLED` defaults to `0`. The
  binary is rebuilt only when it is missing, when a Go source file, `go.mod`,
  `go.sum` or a file the binaries embed (`internal/limits/limits.txt`) changed (by content) since the last build, or when one of those
  environment variables did. `mix compile --force` always rebuilds.

  Environment:

    * `PS_PORT_SRC` - the Go module root to build from (for git dependencies
      with `subdir:` whose layout differs from this repository's)
    * `PS_PORT_GO` - the `go` executable to use (default: `go` on `PATH`, then
      `$GOROOT/bin/go`)
  """

  use Mix.Task.Compiler

  @repo_root Path.expand("../..", __DIR__)
  @env_keys ~w(GOOS GOARCH GOARM GOAMD64 CGO_ENABLED)

  @impl Mix.Task.Compiler
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    src = source_dir()
    out = binary_path()
    stamp = {build_env(), sources_digest(src)}

    if opts[:force] || not File.regular?(out) || not File.regular?(node_binary_path()) ||
         not File.regular?(lean_binary_path()) ||
         read_manifest() != stamp do
      build!(src, out, stamp)
      {:ok, []}
    else
      {:noop, []}
    end
  end

  @impl Mix.Task.Compiler
  def manifests, do: [manifest_path()]

  @impl Mix.Task.Compiler
  def clean do
    File.rm(binary_path())
    File.rm(node_binary_path())
    File.rm(lean_binary_path())
    File.rm(manifest_path())
    :ok
  end

  defp source_dir do
    src = System.get_env("PS_PORT_SRC") || @repo_root

    if not File.regular?(Path.join(src, "go.mod")) do
      Mix.raise(
        "cannot build ps_port: #{Path.join(src, "go.mod")} does not exist. " <>
          "Set PS_PORT_SRC to the directory that holds ps_port's go.mod."
      )
    end

    src
  end

  defp binary_path, do: Path.join(Mix.Project.app_path(), "priv/ps_port")
  defp node_binary_path, do: Path.join(Mix.Project.app_path(), "priv/ps_port_node")
  defp lean_binary_path, do: Path.join(Mix.Project.app_path(), "priv/ps_port_lean")

  # The binaries go build makes, all into priv/ (named after their directories).
  @packages ["./cmd/ps_port", "./cmd/ps_port_lean", "./cmd/ps_port_node"]

  defp manifest_path, do: Path.join(Mix.Project.manifest_path(), "compile.ps_port")

  defp build_env do
    env = Enum.map(@env_keys, &{&1, System.get_env(&1)})
    List.keystore(env, "CGO_ENABLED", 0, {"CGO_ENABLED", System.get_env("CGO_ENABLED") || "0"})
  end

  # A digest of every Go source (with its path), go.mod and go.sum: the binary
  # is rebuilt when any of them changed since the last build (mtimes have a
  # one-second resolution and go backwards on checkouts; contents do not).
  defp sources_digest(src) do
    src
    |> go_sources()
    |> Enum.sort()
    |> Enum.reduce(:erlang.md5_init(), fn path, md5 ->
      content =
        case File.read(path) do
          {:ok, content} -> content
          {:error, _} -> ""
        end

      md5 |> :erlang.md5_update(Path.relative_to(path, src)) |> :erlang.md5_update(content)
    end)
    |> :erlang.md5_final()
  end

  # Files that go:embed puts into the binaries: a change to one is a change
  # to ps_port (internal/limits/limits.txt, which ProtonStream.Limits reads
  # too).
  @embedded ["internal/limits/limits.txt"]

  defp go_sources(src) do
    [Path.join(src, "go.mod"), Path.join(src, "go.sum")] ++
      Enum.map(@embedded, &Path.join(src, &1)) ++ walk(src)
  end

  # Every .go file under dir, skipping hidden directories and the ones that
  # never hold ps_port's sources (a chroot or _build can be huge).
  defp walk(dir) do
    case File.ls(dir) do
      {:ok, names} -> Enum.flat_map(names, &walk_entry(dir, &1))
      {:error, _} -> []
    end
  end

  defp walk_entry(_dir, "." <> _), do: []

  defp walk_entry(_dir, name) when name in ~w(_build deps elixir_shim node_modules testdata),
    do: []

  defp walk_entry(dir, name) do
    path = Path.join(dir, name)

    cond do
      String.ends_with?(name, ".go") -> [path]
      File.dir?(path) and not symlink?(path) -> walk(path)
      true -> []
    end
  end

  defp symlink?(path), do: match?({:ok, %{type: :symlink}}, File.lstat(path))

  defp read_manifest do
    with {:ok, bin} <- File.read(manifest_path()),
         {:ok, term} <- safe_binary_to_term(bin) do
      term
    else
      _ -> nil
    end
  end

  defp safe_binary_to_term(bin) do
    {:ok, :erlang.binary_to_term(bin)}
  rescue
    ArgumentError -> :error
  end

  defp build!(src, out, stamp) do
    go = go_executable!(src)
    {build_env, _digest} = stamp
    env = for {key, value} <- build_env, value != nil, do: {key, value}
    %{version: version, cache: cache, modcache: modcache} = go_env!(go, src)
    check_version!(go, version, src)
    # Looked at before `go list` below puts its first files in the cache.
    hint = duration_hint(cache)
    env = env ++ module_env!(go, src, env, modcache)
    File.mkdir_p!(Path.dirname(out))
    args = ["build", "-trimpath", "-ldflags=-s", "-o", Path.dirname(out) <> "/" | @packages]

    Mix.shell().info(
      "Compiling ps_port, proton_stream's Go helper, with #{version} " <>
        "(go #{Enum.join(args, " ")})\n" <> hint
    )

    started = System.monotonic_time(:second)
    ticker = start_ticker(started)

    result =
      try do
        System.cmd(go, args, cd: src, env: env, stderr_to_stdout: true)
      after
        send(ticker, :stop)
      end

    case result do
      {_, 0} ->
        File.mkdir_p!(Path.dirname(manifest_path()))
        File.write!(manifest_path(), :erlang.term_to_binary(stamp))
        Mix.shell().info("Compiled ps_port in #{System.monotonic_time(:second) - started} s")

      {output, status} ->
        Mix.raise("""
        could not build ps_port: `go #{Enum.join(args, " ")}` in #{src} exited with status #{status}:

        #{output}
        """)
    end
  end

  # A cold build compiles the standard library and every dependency: minutes
  # on a small machine (2 min 47 s measured on 2 busy cores), seconds after.
  defp duration_hint(cache) do
    if cold_cache?(cache) do
      "This is the first Go build on this machine (empty build cache #{cache}): " <>
        "it compiles the Go standard library and ps_port's modules and takes about " <>
        "1-3 minutes on a small machine, printing a line every 20 s. Later builds take seconds."
    else
      "With a warm Go build cache (#{cache}) this takes seconds (up to 3 minutes when the cache " <>
        "holds nothing for this Go version or target), printing a line every 20 s."
    end
  end

  # Go makes the cache's 256 subdirectories on first use; a cache that has
  # built the standard library holds thousands of files in them.
  defp cold_cache?(cache) do
    case File.ls(cache) do
      {:ok, dirs} ->
        files =
          for dir <- dirs, String.length(dir) == 2, reduce: 0 do
            n ->
              case File.ls(Path.join(cache, dir)) do
                {:ok, entries} -> n + length(entries)
                {:error, _} -> n
              end
          end

        files < 200

      {:error, _} ->
        true
    end
  end

  defp start_ticker(started) do
    shell = Mix.shell()

    spawn_link(fn -> tick(shell, started) end)
  end

  defp tick(shell, started) do
    receive do
      :stop -> :ok
    after
      20_000 ->
        shell.info("  ... still building ps_port (#{System.monotonic_time(:second) - started} s)")
        tick(shell, started)
    end
  end

  defp go_env!(go, src) do
    case System.cmd(go, ["env", "GOVERSION", "GOCACHE", "GOMODCACHE"],
           cd: src,
           stderr_to_stdout: true
         ) do
      {out, 0} ->
        case String.split(out, "\n") do
          [version, cache, modcache | _] -> %{version: version, cache: cache, modcache: modcache}
          _ -> %{version: "go", cache: "", modcache: ""}
        end

      {out, status} ->
        Mix.raise("could not build ps_port: `#{go} env` exited with status #{status}:\n\n#{out}")
    end
  end

  # go.mod's `go` line is the oldest Go that builds ps_port. An older go
  # would try to download a newer toolchain (and fail offline): say so first.
  defp check_version!(go, "go" <> version, src) do
    wanted = go_version(src)

    if parse_version(version) < parse_version(wanted) do
      Mix.raise("""
      could not build ps_port: it needs Go #{wanted} or newer (go.mod's go line), \
      and #{go} is go#{version}.

      Install Go #{wanted} or newer (https://go.dev/dl/) and put it first on PATH, \
      or point PS_PORT_GO at its go executable.
      """)
    end
  end

  defp check_version!(_go, _version, _src), do: :ok

  defp parse_version(version) do
    version
    |> String.split(~r/[^0-9]+/, trim: true)
    |> Enum.take(3)
    |> Enum.map(&String.to_integer/1)
  end

  # Offline once the modules are there: when everything ps_port imports
  # resolves from the module cache (or vendor/) with the network off, the
  # build runs with GOPROXY=off. Otherwise the modules are downloaded first
  # (GOPROXY as configured), and when that fails the error says how to get
  # them.
  defp module_env!(go, src, env, modcache) do
    offline = [{"GOPROXY", "off"}, {"GOTOOLCHAIN", "local"} | env]

    case System.cmd(go, ["list", "-deps" | @packages],
           cd: src,
           env: offline,
           stderr_to_stdout: true
         ) do
      {_, 0} ->
        [{"GOPROXY", "off"}]

      {out, _} ->
        if out =~ ~r/GOPROXY=off|missing go.sum entry|cannot find module|no required module/ do
          download_modules!(go, src, env, modcache)
        else
          # Not a missing module (a syntax error, say): go build reports it.
          []
        end
    end
  end

  defp download_modules!(go, src, env, modcache) do
    Mix.shell().info(
      "Downloading the Go modules ps_port needs (go mod download, GOPROXY=#{System.get_env("GOPROXY") || "Go's default"})"
    )

    case System.cmd(go, ["mod", "download"], cd: src, env: env, stderr_to_stdout: true) do
      {_, 0} ->
        []

      {out, status} ->
        Mix.raise("""
        could not build ps_port: the Go modules it needs are not in the module cache, \
        and `go mod download` in #{src} failed (status #{status}):

        #{out}
        To build offline, get the modules once on a machine with network access, either into
        the module cache (`go env GOMODCACHE`, here #{modcache}):

            cd #{src} && go mod download

        and copy that directory here, or into the source tree:

            cd #{src} && go mod vendor

        (go build then uses vendor/). With a module proxy of your own, set GOPROXY.
        """)
    end
  end

  defp go_executable!(src) do
    candidates = [
      System.get_env("PS_PORT_GO"),
      System.find_executable("go"),
      System.get_env("GOROOT") && Path.join(System.get_env("GOROOT"), "bin/go")
    ]

    case Enum.find(candidates, &(&1 && File.regular?(&1))) do
      nil ->
        Mix.raise("""
        could not build ps_port: the Go toolchain was not found.

        proton_stream compiles its helper program ps_port from Go sources when it
        is compiled. Install Go #{go_version(src)} or newer (https://go.dev/dl/) and
        put its bin directory on PATH, for example:

            export PATH="$PATH:/usr/local/go/bin"

        or point PS_PORT_GO at the go executable.
        """)

      go ->
        go
    end
  end

  # The minimum Go version is whatever go.mod's `go` directive says.
  defp go_version(src) do
    with {:ok, gomod} <- File.read(Path.join(src, "go.mod")),
         [_, version] <- Regex.run(~r/^go\s+(\S+)/m, gomod) do
      version
    else
      _ -> "1.26.0"
    end
  end
end
