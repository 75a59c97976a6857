defmodule VarBridge.JSON do
  @moduledoc false
  # JSON through jiffy (Debian's erlang-jiffy): objects decode to maps with
  # string keys, null to nil. Encoding takes maps, lists, binaries, numbers,
  # booleans and nil (jiffy itself would write nil as the string "nil").

  @spec decode(binary()) :: {:ok, term()} | {:error, term()}
  def decode(bin) when is_binary(bin) do
    {:ok, :jiffy.decode(bin, [:return_maps, {:null_term, nil}])}
  catch
    :throw, {:error, reason} -> {:error, {:invalid_json, reason}}
    :error, reason -> {:error, {:invalid_json, reason}}
  end

  @spec encode!(term()) :: binary()
  def encode!(term), do: term |> nulls() |> :jiffy.encode() |> IO.iodata_to_binary()

  defp nulls(nil), do: :null
  defp nulls(m) when is_map(m), do: Map.new(m, fn {k, v} -> {k, nulls(v)} end)
  defp nulls(l) when is_list(l), do: Enum.map(l, &nulls/1)
  defp nulls(x), do: x
end
