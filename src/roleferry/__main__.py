from roleferry.cli import main

main()
