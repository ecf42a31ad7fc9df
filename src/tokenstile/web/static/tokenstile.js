// tokenstile browser client
