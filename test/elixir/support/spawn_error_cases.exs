defmodule ProtonStreamTest.Cases.SpawnErrors do
  @moduledoc """
  Spawn errors that say what and why, in every entry point (`open/3`,
  `start_link/5`, `cmd/3`, `stream!/3`, `ProtonStream.Daemon`), shared by
  every mode (`use ProtonStreamTest.Cases.SpawnErrors, mode: mode`; `m` is
  the mode's options): port mode in `ProtonStreamTest.SpawnErrorsTest`,
  node mode in `ProtonStreamTest.NodeMode.SpawnErrorsTest`.

  The reason atoms are proton_stream 1.8.3's (a program that is not found
  raises `ErlangError` `:enoent`); the words are in the exception's message
  or the error tuple.
  """

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      setup do
        Process.flag(:trap_exit, true)
        dir = Path.join(System.tmp_dir!(), "proton_stream_spawn_errors_#{rand_hex()}")
        File.mkdir_p!(dir)
        on_exit(fn -> File.rm_rf!(dir) end)
        Map.put(ProtonStreamTest.Mode.context(unquote(mode)), :dir, dir)
      end

      defp script!(dir, name, text, mode \\ 0o755) do
        path = Path.join(dir, name)
        File.write!(path, text)
        File.chmod!(path, mode)
        path
      end

      # Every entry point with `command`, `args` and `opts`: the error each
      # gave, as {:raised, exception} or {:error, {:spawn_error, _, _}}.
      defp every_entry_point(command, args, opts) do
        [
          open: fn -> ProtonStream.open(command, args, opts) end,
          # start_link reports a failed init with an {:EXIT, ...} too (OTP's
          # rule for a trapping caller): called from a process of their own.
          start_link: fn ->
            isolated(fn ->
              ProtonStream.start_link(
                ProtonStreamTest.Cases.SpawnErrors.Quiet,
                command,
                args,
                [],
                opts
              )
            end)
          end,
          daemon: fn ->
            isolated(fn -> ProtonStream.Daemon.start_link(command, args, opts) end)
          end,
          cmd: fn -> ProtonStream.cmd(command, args, opts) end,
          stream: fn -> ProtonStream.stream!(command, args, opts) |> Enum.to_list() end
        ]
        |> Enum.map(fn {entry, fun} -> {entry, attempt(fun)} end)
      end

      defp attempt(fun) do
        fun.()
      rescue
        e -> {:raised, e}
      end

      defp isolated(fun) do
        parent = self()
        ref = make_ref()

        {pid, monitor} =
          spawn_monitor(fn ->
            Process.flag(:trap_exit, true)
            send(parent, {ref, attempt(fun)})
          end)

        receive do
          {^ref, result} ->
            Process.demonitor(monitor, [:flush])

            case result do
              {:raised, e} -> raise e
              result -> result
            end

          {:DOWN, ^monitor, :process, ^pid, reason} ->
            flunk("the caller died: #{inspect(reason)}")
        end
      end

      # `reason` and a message matching every regex in `words`, from each
      # entry point: a tuple from open/start_link/Daemon, ErlangError with
      # the reason as `original` from cmd/3 and stream!/3.
      defp assert_spawn_error(results, reason, words) do
        for {entry, result} <- results do
          message =
            case result do
              {:error, {:spawn_error, ^reason, message}}
              when entry in [:open, :start_link, :daemon] ->
                message

              {:raised, %ErlangError{original: ^reason} = e} when entry in [:cmd, :stream] ->
                Exception.message(e)

              other ->
                flunk(
                  "#{entry}: expected a #{inspect(reason)} spawn error, got #{inspect(other)}"
                )
            end

          for word <- words,
              do: assert(message =~ word, "#{entry}: #{inspect(message)} lacks #{inspect(word)}")
        end

        refute_received {:EXIT, _, _}
      end

      test "not found: ErlangError :enoent everywhere, naming the program and the PATH searched",
           %{m: m} do
        for {entry, result} <- every_entry_point("no_such_program_xyz", [], m) do
          assert {:raised, %ErlangError{original: :enoent} = e} = result,
                 "#{entry}: #{inspect(result)}"

          message = Exception.message(e)
          assert message =~ "no_such_program_xyz"
          assert message =~ "not found in"
          assert message =~ "/usr/bin"
        end
      end

      test "a program only on :env's PATH is found there; the PATH searched is :env's",
           %{m: m, dir: dir} do
        script!(dir, "only_here", "#!/bin/sh\necho found\n")
        env = [env: [{"PATH", dir <> ":/usr/bin:/bin"}]]
        assert {"found\n", 0} = ProtonStream.cmd("only_here", [], env ++ m)

        e =
          assert_raise ErlangError, fn ->
            ProtonStream.cmd("true", [], [env: [{"PATH", "/no/such/bin"}]] ++ m)
          end

        assert e.original == :enoent
        assert Exception.message(e) =~ "/no/such/bin"
      end

      test "not executable: :eacces, with the file's mode", %{m: m, dir: dir} do
        path = script!(dir, "not_executable", "#!/bin/sh\n", 0o644)

        assert_spawn_error(every_entry_point(path, [], m), :eacces, [
          path,
          "not executable",
          "0644"
        ])
      end

      test "a directory: :eacces, saying it is a directory", %{m: m, dir: dir} do
        assert_spawn_error(every_entry_point(dir, [], m), :eacces, [dir, "is a directory"])
      end

      test "a #! interpreter that does not exist: :enoent, naming the interpreter",
           %{m: m, dir: dir} do
        path = script!(dir, "bad_interpreter", "#!/no/such/interpreter -x\necho\n")

        assert_spawn_error(every_entry_point(path, [], m), :enoent, [
          path,
          "#! line names the interpreter /no/such/interpreter, which does not exist"
        ])
      end

      test "an argument list too long: :e2big, with the sizes and the limit", %{m: m} do
        args = for _ <- 1..30, do: String.duplicate("x", 100_000)

        assert_spawn_error(every_entry_point("echo", args, m), :e2big, ["30 arguments", "ARG_MAX"])
      end

      test "an unknown user or group is named as such, not as the program", %{m: m} do
        results = every_entry_point("true", [], [uid: "no_such_user_xyz"] ++ m)

        assert_spawn_error(results, :baduser, [
          ~s(the user asked for: no such user "no_such_user_xyz")
        ])

        for {_, {:error, {:spawn_error, _, message}}} <- results,
            do: refute(message =~ ~s(cannot start "no_such_user_xyz"))

        results = every_entry_point("true", [], [gid: "no_such_group_xyz"] ++ m)
        assert_spawn_error(results, :badgroup, [~s(no such group "no_such_group_xyz")])
      end

      test "a missing working directory: :enoent, naming it as the cd", %{m: m} do
        assert_spawn_error(every_entry_point("true", [], [cd: "/no/such/dir"] ++ m), :enoent, [
          ~s[working directory (cd) "/no/such/dir"]
        ])

        # Also for a program given relative to it.
        assert_spawn_error(every_entry_point("./prog", [], [cd: "/no/such/dir"] ++ m), :enoent, [
          ~s[working directory (cd) "/no/such/dir"]
        ])
      end

      test "a relative program is looked up from :cd", %{m: m, dir: dir} do
        script!(dir, "here", "#!/bin/sh\necho from cd\n")
        assert {"from cd\n", 0} = ProtonStream.cmd("./here", [], [cd: dir] ++ m)

        e = assert_raise ErlangError, fn -> ProtonStream.cmd("./nothere", [], [cd: dir] ++ m) end
        assert e.original == :enoent
        assert Exception.message(e) =~ "nothere"
      end
    end
  end
end

defmodule ProtonStreamTest.Cases.SpawnErrors.Quiet do
  @moduledoc false
  # A callback module with no callbacks, for start_link/5.
end
