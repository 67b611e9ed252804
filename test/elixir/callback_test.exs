defmodule ProtonStreamTest.CallbackTest do
  # Callback module mode through a port (support/callback_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Callback, mode: :port
end
