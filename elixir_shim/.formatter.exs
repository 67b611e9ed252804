[
  inputs: [
    "{mix,.formatter}.exs",
    "mix/*.exs",
    "{lib,config}/**/*.{ex,exs}",
    "../test/elixir/**/*.{ex,exs}"
  ]
]
