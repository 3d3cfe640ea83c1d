class P:
    '''Doc
class Fake:
import os
'''
    X = r"class \w+\("
