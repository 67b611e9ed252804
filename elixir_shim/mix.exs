# The :ps_port compiler has to exist before this project compiles, so it lives
# in a script that mix.exs loads, not in lib/.
Code.require_file("mix/ps_port_compiler.exs", __DIR__)

defmodule ProtonStream.MixProject do
  use Mix.Project

  @version "1.8.3"

  def project do
    [
      app: :proton_stream,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:ps_port] ++ Mix.compilers(),
      elixirc_options: [warnings_as_errors: true],
      test_paths: ["../test/elixir"],
      # Shared cases that test_helper.exs requires, not tests (Elixir 1.17+
      # warns about .exs files under test_paths that are neither).
      test_ignore_filters: [&String.starts_with?(&1, "../test/elixir/support/")],
      deps: [],
      docs: [main: "readme", extras: ["README.md"]],
      description: "Streaming OS processes with containment, over the Go helper ps_port",
      package: [licenses: ["Apache-2.0"]]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {ProtonStream.Application, []}]
  end
end
