defmodule ProtonStream.Application do
  @moduledoc false
  # Holds ProtonStream.Registry, where node mode's watchers register under
  # the pid they watch (see ProtonStream.Remote).
  use Application

  @impl Application
  def start(_type, _args) do
    children = [{Registry, keys: :unique, name: ProtonStream.Registry}]
    Supervisor.start_link(children, strategy: :one_for_one, name: ProtonStream.Supervisor)
  end
end
